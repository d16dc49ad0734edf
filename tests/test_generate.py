"""``python -m pmfm.generate``: sharded, resumable, refuses to mix configs (shrunk to 8 regions)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import tiny_overrides
from hydra import compose, initialize_config_module

from pmfm.datasets.store import DatasetError, ShardStore, load_dataset, rows_checksum
from pmfm.pipelines.dataset import make_dataset

SMALL = ["dataset.shard_size=6", "dataset.chunk_size=2", "dataset.num_shards=2", "progress=false"]


def _cfg(folder, root, *extra):
    with initialize_config_module("pmfm.conf", version_base="1.3"):
        return compose(
            "generate", overrides=[*tiny_overrides(folder), f"paths.datasets={root}", *SMALL, *extra]
        )


def _generate(folder, root, tmp_path, *extra):
    out = tmp_path / f"run_{len(list(tmp_path.glob('run_*')))}"
    out.mkdir()
    return make_dataset(_cfg(folder, root, *extra), out)


def _same(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in a)


def test_sobol_dataset_rows_and_manifest(tiny_folder, tmp_path):
    manifest = _generate(tiny_folder, tmp_path / "ds", tmp_path)
    rows = load_dataset(tmp_path / "ds" / "sobol_pmfm_100tr_r3")
    assert manifest["complete"] and manifest["counts"]["rows"] == 12
    assert sorted(rows["sample_id"].tolist()) == list(range(12))  # no sample lost or duplicated
    assert np.all(rows["repeats"] == 3) and np.all(rows["start"] == -1)
    np.testing.assert_allclose(rows["total"], rows["fc_cost"] + rows["ks"])
    assert {"config", "config_hash", "versions", "shards", "counts"} <= set(manifest)
    assert manifest["config"]["simulator"]["warmup_steps"] == 100
    assert all(len(info["sha256"]) == 64 for info in manifest["shards"].values())


def test_two_shard_indices_are_disjoint_and_make_the_whole(tiny_folder, tmp_path):
    _generate(tiny_folder, tmp_path / "one", tmp_path)
    _generate(tiny_folder, tmp_path / "split", tmp_path, "dataset.shard_index=1")
    part = load_dataset(tmp_path / "split" / "sobol_pmfm_100tr_r3")
    assert set(part["shard"].tolist()) == {1}
    _generate(tiny_folder, tmp_path / "split", tmp_path, "dataset.shard_index=0")
    assert _same(
        load_dataset(tmp_path / "one" / "sobol_pmfm_100tr_r3"),
        load_dataset(tmp_path / "split" / "sobol_pmfm_100tr_r3"),
    )


def test_corrupt_shard_is_detected_and_regenerated(tiny_folder, tmp_path):
    root = tmp_path / "ds"
    _generate(tiny_folder, root, tmp_path)
    before = load_dataset(root / "sobol_pmfm_100tr_r3")
    shard = ShardStore(root / "sobol_pmfm_100tr_r3").shard_path(1)
    shard.write_bytes(shard.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="shard_00001.npz: corrupt or truncated"):
        manifest = _generate(tiny_folder, root, tmp_path)
    assert manifest["complete"]
    assert _same(before, load_dataset(root / "sobol_pmfm_100tr_r3"))


def test_manifest_from_another_config_is_refused(tiny_folder, tmp_path):
    _generate(tiny_folder, tmp_path / "ds", tmp_path)
    with pytest.raises(DatasetError, match=r"different config \(differs in dataset.seed\)"):
        _generate(tiny_folder, tmp_path / "ds", tmp_path, "dataset.seed=1")


def test_cmaes_dataset_records_runs_and_generations(tiny_folder, tmp_path):
    manifest = _generate(
        tiny_folder,
        tmp_path / "ds",
        tmp_path,
        "dataset=cmaes",
        "dataset.cmaes.popsize=6",
        "dataset.cmaes.mu=3",
        "dataset.cmaes.max_generations=2",
        "dataset.cmaes.n_starts=3",
    )
    rows = load_dataset(tmp_path / "ds" / "cmaes_pmfm_100tr_r3")
    assert manifest["complete"] and len(rows["sample_id"]) == 3 * 2 * 6
    assert len(set(rows["sample_id"].tolist())) == len(rows["sample_id"])
    for start in range(3):  # each run lives in shard start % 2, generations 0 and 1
        mine = rows["start"] == start
        assert set(rows["shard"][mine].tolist()) == {start % 2}
        assert sorted(set(rows["generation"][mine].tolist())) == [0, 1]


def _cli(folder, root, *extra):
    args = [
        sys.executable,
        "-m",
        "pmfm.generate",
        *tiny_overrides(folder),
        f"paths.datasets={root}",
        *SMALL,
        *extra,
    ]
    return args + [f"hydra.run.dir={root}/_run"]


@pytest.mark.parametrize("strategy", ["sobol", "cmaes"])
def test_kill_9_mid_run_then_rerun_gives_the_uninterrupted_dataset(tiny_folder, tmp_path, strategy):
    extra = [
        "dataset=cmaes",
        "dataset.cmaes.popsize=6",
        "dataset.cmaes.mu=3",
        "dataset.cmaes.max_generations=3",
    ]
    extra = extra if strategy == "cmaes" else []
    name = f"{strategy}_pmfm_100tr_r3"
    reference = subprocess.run(_cli(tiny_folder, tmp_path / "ref", *extra), capture_output=True, timeout=300)
    assert reference.returncode == 0, reference.stderr.decode()[-2000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli(tiny_folder, killed, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while time.time() < deadline and not list((killed / name).glob("shard_00000.partial/chunk_000001.npz")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list((killed / name).glob("shard_*.partial/chunk_*.npz")), "killed before any chunk was written"
    assert not (killed / name / "shard_00001.json").exists(), "killed too late to test a resume"

    rerun = subprocess.run(_cli(tiny_folder, killed, *extra), capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    a, b = load_dataset(tmp_path / "ref" / name), load_dataset(killed / name)
    assert rows_checksum(a) == rows_checksum(b)
    assert _same(a, b)


def test_joblib_launcher_fills_two_shards(tiny_folder, tmp_path):
    base = _cli(tiny_folder, tmp_path / "ds")[:-1]
    args = base[:3] + ["-m", *base[3:], "hydra/launcher=joblib_local", "dataset.shard_index=0,1"]
    args.append(f"hydra.sweep.dir={tmp_path}/sweep")
    proc = subprocess.run(args, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    rows = load_dataset(tmp_path / "ds" / "sobol_pmfm_100tr_r3")
    assert sorted(set(rows["shard"].tolist())) == [0, 1] and len(rows["sample_id"]) == 12


def test_folders_are_named_after_circuit_protocol_and_repeats_and_the_shipped_dataset_stays_valid(tmp_path):
    import shutil

    from conftest import compose_config

    from pmfm.datasets.store import BUNDLED_DATASETS
    from pmfm.pipelines.folders import dataset_folder

    def folder(*overrides):
        return dataset_folder(compose_config("generate", [f"paths.datasets={tmp_path}", *overrides]))

    assert folder("dataset=cmaes").name == "cmaes_pmfm_1200tr_r3"
    assert folder("dataset=cmaes", "simulator=fic").name == "cmaes_fic_1200tr_dt0.006_r3"  # no collision
    assert folder("dataset=cmaes", "protocol=short", "dataset.repeats=1").name == "cmaes_pmfm_200tr_r1"
    shipped = dataset_folder(compose_config("generate", ["dataset=hcp_cmaes"]))
    assert shipped == BUNDLED_DATASETS / "hcp_cmaes_pmfm_1200tr_r3"
    # the same config regenerates nothing: its identity (the name left out) is the manifest's
    copy = tmp_path / "copy"
    shutil.copytree(shipped, copy)
    manifest = make_dataset(
        compose_config("generate", ["dataset=hcp_cmaes", f"dataset.folder={copy}"]), tmp_path
    )
    assert manifest["complete"] and manifest["counts"]["rows"] == 1280
    assert (copy / "shard_00000.npz").read_bytes() == (shipped / "shard_00000.npz").read_bytes()
    assert not (copy / "shard_00000.partial").exists()


def test_a_kill_between_the_first_cmaes_chunk_and_its_state_redoes_that_chunk(
    tiny_folder, tmp_path, monkeypatch
):
    extra = [
        "dataset=cmaes",
        "dataset.cmaes.popsize=6",
        "dataset.cmaes.mu=3",
        "dataset.cmaes.max_generations=2",
    ]
    _generate(tiny_folder, tmp_path / "ref", tmp_path, *extra)
    write_chunk = ShardStore.write_chunk

    def killed_after_the_chunk(self, shard, index, rows, state=None):
        write_chunk(self, shard, index, rows)  # the chunk is on disk, its state is not
        raise KeyboardInterrupt

    monkeypatch.setattr(ShardStore, "write_chunk", killed_after_the_chunk)
    with pytest.raises(KeyboardInterrupt):
        _generate(tiny_folder, tmp_path / "torn", tmp_path, *extra)
    monkeypatch.setattr(ShardStore, "write_chunk", write_chunk)
    _generate(tiny_folder, tmp_path / "torn", tmp_path, *extra)
    name = "cmaes_pmfm_100tr_r3"
    assert rows_checksum(load_dataset(tmp_path / "ref" / name)) == rows_checksum(
        load_dataset(tmp_path / "torn" / name)
    )
