"""python -m pmfm.fit: the protocol's stages, outputs, resume, and the selection rule."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_diverse_and_feasible, tiny_overrides
from hydra import compose
from scipy.io import loadmat, savemat

from pmfm.evaluate.selection import choose_diverse, map_correlations
from pmfm.params import ParamSpace


@pytest.fixture
def fit_folders(tiny_folder, tmp_path):
    """The tiny data as train and vali splits, and a separate test folder (test split + covariates)."""
    test = tmp_path / "tiny_test"
    test.mkdir()
    for name in ("sc_test.csv", "fc_test.csv", "fcd_test.mat", "myelin.csv", "rsfc_gradient.csv"):
        shutil.copy(tiny_folder / name, test / name)
    cdf = loadmat(tiny_folder / "fcd_test.mat")["test_aveM"]
    for split in ("train", "vali"):
        shutil.copy(tiny_folder / "sc_test.csv", tiny_folder / f"sc_{split}.csv")
        shutil.copy(tiny_folder / "fc_test.csv", tiny_folder / f"fc_{split}.csv")
        savemat(tiny_folder / f"fcd_{split}.mat", {f"{split}_aveM": cdf})
    for name in ("sc_test.csv", "fc_test.csv", "fcd_test.mat"):
        (tiny_folder / name).unlink()  # the training folder has no test split: it must come from test.path
    return tiny_folder, test


def fit_overrides(train_folder, *extra) -> list[str]:
    base = [o for o in tiny_overrides(train_folder) if not o.startswith("data.split")]
    return base + [
        "data.split=train",
        "strategy=simulator",
        "strategy.n_starts=2",
        "strategy.repeats=2",
        "strategy.cmaes.popsize=6",
        "strategy.cmaes.mu=2",
        "strategy.cmaes.max_generations=4",
        "validation.repeats=4",
        "validation.top_k=3",
        "test.repeats=4",
        "test.group_size=2",
        "plot=false",
        *extra,
    ]


def _cli(run_dir: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "pmfm.fit", f"hydra.run.dir={run_dir}", *overrides]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}


# -- the selection rule --------------------------------------------------------------------------


def _space():
    rng = np.random.default_rng(0)
    basis = np.column_stack([np.ones(8), rng.uniform(1.0, 1.7, 8), rng.uniform(-5, 7, 8)])
    return ParamSpace(basis)


def test_choose_diverse_skips_a_set_whose_three_maps_all_correlate_above_098():
    space = _space()
    base = space.random_start(1, np.random.default_rng(1))[0]
    same_maps = base.clone()
    same_maps[[0, 3, 7]] *= 1.01  # intercepts shifted: every map correlates ~1 with base's
    same_maps[6] = base[6] + 3.0  # G differs, but G is not compared
    other_w = base.clone()
    other_w[1], other_w[2] = -base[1], -base[2]  # w map anti-correlated, I and sigma identical
    other = space.random_start(1, np.random.default_rng(7))[0]
    theta = torch.stack([base, same_maps, other_w, other])
    assert (map_correlations(space, base, same_maps) > 0.98).all()
    assert map_correlations(space, base, other_w)[0] < 0.98
    total = np.array([0.5, 0.6, 0.7, 0.8])
    assert choose_diverse(theta, total, space, k=3) == [0, 2, 3]  # 1 skipped: all three maps alike
    assert choose_diverse(theta, total, space, k=2) == [0, 2]
    assert choose_diverse(theta, total, space, k=3, threshold=1.0 + 1e-9) == [0, 1, 2]  # no skipping
    # ranking is by total, not input order; non-finite totals are never chosen
    assert choose_diverse(theta, np.array([0.9, 0.1, np.nan, 0.3]), space, k=4) == [1, 3]


# -- whole fits (tiny data, simulator in the loop) -------------------------------------------------


def test_simulator_fit_writes_results_that_pmfm_simulate_reads_back(fit_folders, tmp_path):
    from pmfm.data import load_folder
    from pmfm.pipelines.fit.run import fit
    from pmfm.pipelines.results import n_rows, read_results

    train_folder, test_folder = fit_folders
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with _conf():
        cfg = compose("fit", overrides=fit_overrides(train_folder, f"test.path={test_folder}"))
    best = fit(cfg, run_dir)
    space = ParamSpace(load_folder(train_folder, "train", n_tr=100).basis())
    table = np.loadtxt(run_dir / "results.csv", delimiter=",", ndmin=2)
    assert table.shape[0] == n_rows(8) == 11 + 3 * 8 + 1 + 10
    results = read_results(run_dir / "results.csv", space)
    k = len(results.theta)
    assert_diverse_and_feasible(space, results.theta, most=3)  # validation.top_k=3
    assert results.costs["vali"][0, 2] == pytest.approx(best)
    assert np.all(np.diff(results.costs["vali"][:, 2]) >= 0)  # best first
    validity = np.loadtxt(run_dir / "validity.csv", delimiter=",", skiprows=2, ndmin=2)
    assert (validity[:, 2] > 0).all()  # every chosen set had a valid validation repeat
    assert np.isfinite(results.costs["test"]).all()  # the test stage ran on the separate folder
    # regional rows are the coefficients' maps
    maps = space.regional(results.theta)
    np.testing.assert_allclose(table[11 : 11 + 8].T, maps.w.numpy(), rtol=1e-12)
    np.testing.assert_allclose(table[11 + 16], maps.G.numpy(), rtol=1e-12)
    # the released layout without coefficient rows reads back to the same sets (least squares)
    shutil.copy(run_dir / "results.csv", tmp_path / "released.csv")
    np.savetxt(tmp_path / "released.csv", table[: n_rows(8, False)], delimiter=",", fmt="%.17g")
    np.testing.assert_allclose(
        read_results(tmp_path / "released.csv", space).theta, results.theta, rtol=1e-8, atol=1e-12
    )
    for name in ("maps.csv", "summary.csv", "summary.json"):
        assert (run_dir / name).is_file()

    # pmfm.simulate reads the file and re-simulates the same sets
    sim_dir = tmp_path / "sim"
    overrides = [o for o in tiny_overrides(train_folder) if not o.startswith("data.split")]
    proc = subprocess.run(
        [sys.executable, "-m", "pmfm.simulate", f"hydra.run.dir={sim_dir}", *overrides, "data.split=train",
         f"params_csv={run_dir / 'results.csv'}", "params_layout=test_all", "repeats=2", "plot=false",
         "save_bold=false"],
        capture_output=True, timeout=300, env=_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    costs = np.loadtxt(sim_dir / "costs.csv", delimiter=",", skiprows=1, ndmin=2)
    assert costs.shape == (k, 5)
    assert np.isfinite(costs[:, 3]).all()


def _conf():
    from hydra import initialize_config_module

    return initialize_config_module("pmfm.conf", version_base="1.3")


def test_fit_without_test_split_says_so_loudly_and_leaves_test_rows_nan(fit_folders, tmp_path, capsys):
    from pmfm.pipelines.fit.run import fit

    train_folder, _ = fit_folders
    with _conf():
        cfg = compose("fit", overrides=fit_overrides(train_folder, "strategy.cmaes.max_generations=2"))
    fit(cfg, tmp_path)
    assert "TEST STAGE SKIPPED" in capsys.readouterr().err
    table = np.loadtxt(tmp_path / "results.csv", delimiter=",", ndmin=2)
    assert np.isnan(table[8:11]).all() and np.isfinite(table[5:8]).all()


def test_killed_fit_resumes_and_gives_the_uninterrupted_result(fit_folders, tmp_path):
    train_folder, test_folder = fit_folders
    overrides = fit_overrides(train_folder, f"test.path={test_folder}", "strategy.cmaes.max_generations=6")
    reference = subprocess.run(
        _cli(tmp_path / "ref", overrides), capture_output=True, timeout=300, env=_env()
    )
    assert reference.returncode == 0, reference.stderr.decode()[-2000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli(killed, overrides), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env()
    )
    progress = killed / "state" / "search_progress.pt"
    deadline = time.time() + 240
    while time.time() < deadline and not progress.is_file():
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert progress.is_file(), "killed before the first generation was saved"
    assert not (killed / "state" / "search.pt").exists(), "killed too late to test a resume"
    generation = torch.load(progress, weights_only=False)["cmaes"]["generation"]
    assert generation < 6, "the search finished before the kill: nothing left to resume"

    rerun = subprocess.run(_cli(killed, overrides), capture_output=True, timeout=300, env=_env())
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert b"resuming" in rerun.stderr + rerun.stdout
    a = np.loadtxt(tmp_path / "ref" / "results.csv", delimiter=",")
    b = np.loadtxt(killed / "results.csv", delimiter=",")
    np.testing.assert_array_equal(a, b)


def test_resuming_with_other_settings_is_refused(fit_folders, tmp_path):
    from pmfm.pipelines.fit.run import fit
    from pmfm.pipelines.fit.state import StateError

    train_folder, _ = fit_folders
    with _conf():
        cfg = compose("fit", overrides=fit_overrides(train_folder, "strategy.cmaes.max_generations=1"))
        other = compose(
            "fit", overrides=fit_overrides(train_folder, "strategy.cmaes.max_generations=1", "seed=5")
        )
    fit(cfg, tmp_path)
    with pytest.raises(StateError, match="seed"):
        fit(other, tmp_path)


@pytest.mark.slow  # ~30 s alone: generation, training, search, re-simulation, validation end to end
def test_surrogate_fit_generates_trains_searches_and_counts_every_simulation(fit_folders, tmp_path):
    import json

    from pmfm.pipelines.fit.run import fit

    train_folder, _ = fit_folders
    overrides = [
        o
        for o in fit_overrides(train_folder, f"paths.datasets={tmp_path / 'datasets'}")
        if not o.startswith("strategy")
    ]
    overrides += [
        "strategy=surrogate",
        "search.n_starts=3",
        "strategy.top_k=3",
        "strategy.repeats=2",
        "dataset=cmaes",
        "dataset.name=tiny_cmaes",
        "model=mlp",
        "model.network_hparams.features=coefficients",
        "dataset.num_shards=1",
        "dataset.cmaes.n_starts=3",
        "dataset.cmaes.popsize=8",
        "dataset.cmaes.max_generations=3",
        "trainer.max_epochs=3",
        "trainer.accelerator=cpu",
        "search.popsize=10",
        "search.mu=3",
        "search.max_generations=5",
    ]
    with _conf():
        cfg = compose("fit", overrides=overrides)
    fit(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # dataset: 3 starts x 3 generations x 8 candidates x R=3; re-simulation: K x R=2; validation: K x R=4
    k = len(np.loadtxt(tmp_path / "run" / "results.csv", delimiter=",", ndmin=2)[0])
    assert summary["dataset"]["simulations"] == 3 * 3 * 8 * 3
    n_candidates = summary["resimulate"]["simulations"] // 2
    assert n_candidates <= 3  # strategy.top_k re-simulated
    assert k == n_candidates  # the search already applied the diversity rule: validation keeps all
    assert summary["validation"]["simulations"] == n_candidates * 4
    assert summary["total"]["simulations"] == 216 + n_candidates * 6
    assert summary["surrogate_search"]["surrogate_evaluations"] > 0
    assert (tmp_path / "run" / "surrogate" / "checkpoints" / "last.ckpt").is_file()

    # a second fit reuses the checkpoint: no dataset, no training, the same chosen sets
    from pmfm.pipelines.fit.state import RunState

    ckpt = RunState(tmp_path / "run").load("surrogate")["ckpt"]
    with _conf():
        again = compose("fit", overrides=[*overrides, f"strategy.ckpt={ckpt}"])
    fit(again, tmp_path / "reuse")
    summary2 = json.loads((tmp_path / "reuse" / "summary.json").read_text())
    assert "dataset" not in summary2 and summary2["total"]["simulations"] == n_candidates * 6
    np.testing.assert_array_equal(
        np.loadtxt(tmp_path / "run" / "results.csv", delimiter=","),
        np.loadtxt(tmp_path / "reuse" / "results.csv", delimiter=","),
    )


class _SumSurrogate:
    """A stand-in surrogate for the pre-screened fit: predicts the sum of the normalised coefficients."""

    hparams: dict = {}

    def predict_normalised(self, u, grad=False):
        return {"total": u.sum(1), "p_valid": torch.ones(len(u), dtype=u.dtype)}


def test_prescreened_fit_simulates_only_the_surrogates_picks(fit_folders, tmp_path, monkeypatch):
    import json

    import pmfm.pipelines.fit.run
    from pmfm.pipelines.fit.run import fit

    monkeypatch.setattr(
        pmfm.pipelines.fit.run, "prepare_surrogate", lambda cfg, out_dir, state: _SumSurrogate()
    )
    train_folder, _ = fit_folders
    overrides = [o for o in fit_overrides(train_folder) if not o.startswith("strategy")] + [
        "strategy=prescreen",
        "strategy.repeats=2",
        "strategy.n_starts=2",
        "strategy.cmaes.popsize=8",
        "strategy.cmaes.mu=2",
        "strategy.simulate_top=3",
        "strategy.cmaes.max_generations=2",
    ]
    with _conf():
        cfg = compose("fit", overrides=overrides)
        too_few = compose("fit", overrides=[*overrides, "strategy.simulate_top=1"])  # below mu = 2
    with pytest.raises(ValueError, match="simulate_top=1"):
        fit(too_few, tmp_path / "too_few")
    fit(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["search"]["simulations"] == 2 * 3 * 2 * 2  # starts x simulate_top x R x generations
    assert summary["search"]["surrogate_evaluations"] == 2 * 8 * 2  # every sampled set scored
    assert summary["validation"]["simulations"] == 2 * 2 * 4  # each start's best per generation, R = 4
    results = np.loadtxt(tmp_path / "run" / "results.csv", delimiter=",", ndmin=2)
    assert np.isfinite(results[2:5]).all()  # the chosen sets' training costs are simulated ones


def test_gpu_acceptance_pair_states_its_budgets():
    """The GPU acceptance pair: the baseline runs >= 10 generations, the fast path plans fewer simulations."""
    with _conf():
        sim = compose("fit", overrides=["experiment=fit/accept_simulator_gpu"])
        sur = compose("fit", overrides=["experiment=fit/accept_surrogate_gpu"])
    s, d = sim.strategy, sur.dataset
    assert s.name == "simulator" and s.cmaes.max_generations >= 10 and s.cmaes.popsize == 500
    assert (sur.strategy.name, d.name) == ("prescreen", "hcp_cmaes")
    baseline = s.n_starts * s.cmaes.popsize * s.repeats * s.cmaes.max_generations
    dataset = d.cmaes.n_starts * d.cmaes.popsize * d.cmaes.max_generations * d.repeats
    st = sur.strategy
    screened = st.n_starts * st.simulate_top * st.repeats * st.cmaes.max_generations
    kept = (
        st.n_starts * st.cmaes.max_generations
    )  # each start's best per generation, validated as the baseline's
    r = sim.validation.repeats
    assert (r, sur.validation.repeats, st.repeats, s.repeats) == (20, 20, 3, 3)
    assert baseline + s.n_starts * s.cmaes.max_generations * r == 60_800
    assert dataset + screened + kept * r == 41_040


def test_a_set_invalid_in_every_validation_repeat_is_never_chosen(tmp_path, monkeypatch, caplog):
    from pmfm.cost import Costs, RepeatStats
    from pmfm.evaluate import Evaluation
    from pmfm.pipelines.fit import stages
    from pmfm.pipelines.fit.state import RunState

    space = _space()
    theta = space.random_start(4, np.random.default_rng(2))
    repeats = 3

    def fake_validate(valid_fc, valid_fcd):
        def validate(theta, *args, **kwargs):
            k = len(theta)
            n_fc, n_fcd = torch.tensor(valid_fc), torch.tensor(valid_fcd)
            fc = torch.where(n_fc > 0, torch.tensor([0.5, 0.3, 0.4, 0.6]), torch.tensor(10.0)).double()
            ks = torch.where(n_fcd > 0, torch.full((k,), 0.2), torch.tensor(10.0)).double()
            costs = Costs(fc, torch.zeros(k), ks, fc + ks, n_fc, n_fcd, repeats)
            ones = torch.ones(k * repeats, dtype=torch.bool)
            stats = RepeatStats(
                torch.zeros(k * repeats, 28), torch.zeros(k * repeats, 5, dtype=torch.long), ones, ones
            )
            return Evaluation(costs, stats)

        return validate

    candidates = stages.Candidates(theta, np.ones(4), np.arange(1, 5), np.zeros((4, 3)), np.zeros((4, 1)), "")
    kw = dict(repeats=repeats, seed=0, top_k=3, diversity=1.0 + 1e-9, progress=False)
    # set 1 (the best total apart from the invalid ones) had no valid FC repeat, set 2 no valid FCD repeat
    monkeypatch.setattr(stages, "validate", fake_validate([3, 0, 3, 1], [3, 3, 0, 2]))
    out = stages.validation_stage(RunState(tmp_path / "a"), candidates, space, None, None, None, **kw)
    assert out["chosen"] == [0, 3]  # fewer than top_k: only the sets with a valid repeat for both terms
    assert "2 of 4 candidates were valid" in caplog.text
    monkeypatch.setattr(stages, "validate", fake_validate([0, 0, 3, 0], [3, 3, 0, 0]))
    with pytest.raises(stages.FitError, match="none of the 4 candidates"):
        stages.validation_stage(RunState(tmp_path / "b"), candidates, space, None, None, None, **kw)
