"""A bank of simulated statistics: made, appended to, resumed, refused for a foreign target, and
ranked against many targets; the simulator strategy fits many targets in one batch per generation."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import AMORTISED, SMALL_BANK, compose_config, tiny_overrides

from pmfm.datasets.bank import Bank
from pmfm.datasets.store import DatasetError, rows_checksum


@pytest.fixture
def tiny(tiny_splits):
    """The tiny data with train and vali splits (the bank's own data, and a target)."""
    return tiny_splits


def _overrides(folder, bank, *extra):
    base = [o for o in tiny_overrides(folder) if not o.startswith("data.split")]
    return [*base, "data.split=train", f"dataset.folder={bank}", *SMALL_BANK, *extra]


def _make(folder, bank, out, *extra):
    from pmfm.pipelines.dataset import make_dataset

    out.mkdir(parents=True, exist_ok=True)
    return make_dataset(compose_config("generate", _overrides(folder, bank, *extra)), out)


def test_bank_rows_carry_statistics_and_a_later_plan_appends_its_own_parts(tiny, tmp_path):
    bank = tmp_path / "bank"
    made = _make(tiny, bank, tmp_path / "run1")
    first = Bank(bank).load()
    check = made["stats_check"]  # every row against its own part's target: stats vs exact cost
    assert check["rows"] == len(first["sample_id"])
    assert max(check[k] for k in ("total", "fc_cost", "ks")) <= 0.002
    assert len(first["sample_id"]) == 2 * 6 + 4 + 2 * 6 * 2  # Sobol, starts, 2 targets x 6 x 2 generations
    assert first["fc_z"].shape == (len(first["sample_id"]), 28) and first["fc_z"].dtype == np.float16
    assert first["fcd_levels"].shape[1] == 1000 and first["fcd_levels"].dtype == np.uint16
    assert sorted({p.name.split("_")[0] for p in Bank(bank).parts()}) == ["cmaes", "sobol", "starts"]
    _make(tiny, bank, tmp_path / "run1b")  # the same plan again: complete, nothing added
    assert rows_checksum(Bank(bank).load()) == rows_checksum(first)
    _make(tiny, bank, tmp_path / "run2", "dataset.seed=5", "dataset.cmaes.synthetic=0")  # another plan
    both = Bank(bank).load()
    assert len(both["sample_id"]) == len(first["sample_id"]) + 12 + 4
    assert len(np.unique(both["sample_id"])) == len(both["sample_id"])  # ids unique across parts
    assert len(Bank(bank).parts()) == 6


def test_two_plans_appending_at_once_as_joblib_shards(tiny, tmp_path):
    """Four jobs at once: two plans (seeds), each filling its first Sobol shard and its CMA-ES run
    against the first of the bank's synthetic subjects, which every job needs and makes at once."""
    bank = tmp_path / "bank"
    launch = [
        "hydra/launcher=joblib_local", "hydra.launcher.n_jobs=4", "dataset.seed=1,2",
        "dataset.shard_index=0,3", f"hydra.sweep.dir={tmp_path}/sweep",
    ]  # fmt: skip
    args = [sys.executable, "-m", "pmfm.generate", "-m", *_overrides(tiny, bank), *launch]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = Bank(bank).load()
    parts = [p.name.rsplit("_", 1)[0] for p in Bank(bank).parts()]
    assert sorted(parts) == ["cmaes_synthetic_000"] * 2 + ["sobol"] * 2
    assert len(rows["sample_id"]) == 2 * 6 + 2 * 6 * 2 and len(np.unique(rows["sample_id"])) == 36
    sobol = [rows["theta"][rows["part"] == i] for i, name in enumerate(parts) if name == "sobol"]
    assert not np.array_equal(*sobol)  # two seeds, two sets of samples
    subjects = bank / "targets" / "seed7001"
    assert sorted(p.name for p in subjects.parent.iterdir()) == ["seed7001"]  # no staging left behind
    assert sorted(p.name for p in subjects.iterdir()) == ["synthetic_000", "synthetic_001"]


def test_kill_9_mid_bank_then_rerun_gives_the_uninterrupted_bank(tiny, tmp_path):
    def cli(bank):
        return [sys.executable, "-m", "pmfm.generate", *_overrides(tiny, bank), f"hydra.run.dir={bank}_run"]

    reference = subprocess.run(cli(tmp_path / "ref"), capture_output=True, timeout=600)
    assert reference.returncode == 0, reference.stderr.decode()[-2000:]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(killed.glob("cmaes_*/shard_00000.partial/chunk_*.npz")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    complete = [json.loads((p / "manifest.json").read_text()).get("complete") for p in Bank(killed).parts()]
    assert not all(complete), "killed too late to test a resume"
    rerun = subprocess.run(cli(killed), capture_output=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    a, b = Bank(tmp_path / "ref").load(), Bank(killed).load()
    assert rows_checksum(a) == rows_checksum(b)


def test_a_target_of_another_sc_is_refused_naming_both(tiny, tmp_path):
    bank = tmp_path / "bank"
    _make(tiny, bank, tmp_path / "run", "dataset.cmaes.synthetic=0")
    other = tmp_path / "other"
    shutil.copytree(tiny, other)
    (other / "target.json").write_text(json.dumps({"tr_s": 0.72, "n_tr": 100, "source": "folder"}))
    sc = np.loadtxt(other / "sc_train.csv", delimiter=",")
    np.savetxt(other / "sc_train.csv", sc * 1.5, delimiter=",")
    with pytest.raises(
        DatasetError, match=f"bank.json: target {other} does not share the bank's sc .the bank's sc '"
    ):
        from pmfm.pipelines.fit.run import fit

        cfg = compose_config("fit", [*_fit_overrides(tiny, bank), "strategy=bank", f"targets.path={other}"])
        fit(cfg, tmp_path / "fit")


def _fit_overrides(folder, bank):
    base = [o for o in tiny_overrides(folder) if not o.startswith("data.split")]
    return [*base, "data.split=train", f"dataset.folder={bank}", "validation.repeats=3", "validation.top_k=2",
            "plot=false", "progress=false"]  # fmt: skip


@pytest.fixture
def subjects(tiny, tmp_path):
    """Two tiny synthetic subjects (2 runs a split), a folder of targets with their truths."""
    from pmfm.pipelines.config import load_data, simulator_of, variant_of
    from pmfm.pipelines.targets import synthetic_subjects

    cfg = compose_config("generate", _overrides(tiny, tmp_path / "unused"))
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    data = load_data(cfg.data, simulator, variant)
    out = tmp_path / "subjects"
    runs = {"train": 2, "vali": 2}
    synthetic_subjects(2, out, data, simulator, variant, runs=runs, seed=99, from_dataset=0, progress=False)
    return out


def test_the_bank_is_ranked_against_every_target_without_simulating(tiny, subjects, tmp_path):
    import torch

    from pmfm.cost import KONG2021, fcd_pair_count
    from pmfm.cost.stats import cost_from_stats
    from pmfm.data import load_folder
    from pmfm.data.targets import find_targets
    from pmfm.datasets.bank import bank_stats
    from pmfm.evaluate import validate
    from pmfm.pipelines.config import simulator_of
    from pmfm.pipelines.fit.run import fit
    from pmfm.pipelines.results import read_results

    bank = tmp_path / "bank"
    _make(tiny, bank, tmp_path / "made")
    cfg = compose_config("fit", [*_fit_overrides(tiny, bank), "strategy=bank", "strategy.top_k=3",
                                 f"targets.path={subjects}"])  # fmt: skip
    fit(cfg, tmp_path / "fit")
    simulator = simulator_of(cfg).for_evaluation()
    table = np.genfromtxt(
        tmp_path / "fit" / "targets.csv", delimiter=",", names=True, dtype=None, encoding=None
    )
    assert list(table["target"]) == ["synthetic_000", "synthetic_001"]
    assert np.isfinite(table["vali_total"]).all() and (table["vali_se"] > 0).all()
    assert (np.abs(table["r_w"]) <= 1).all() and (table["G_error"] >= 0).all()  # the truths are known
    assert (table["simulations"] == 3 * 3).all()  # top_k x validation R: the ranking simulated nothing
    rows = Bank(bank).load()
    stats = bank_stats(rows, fcd_pair_count(100, KONG2021.window))
    for target in find_targets(subjects):
        results = read_results(tmp_path / "fit" / target.name / "results.csv", cfg_space(tiny))
        data = target.load("train")
        costs = cost_from_stats(stats, data.fc, data.fcd_cdf)
        for theta, train in zip(results.theta, results.costs["train"], strict=True):
            row = np.flatnonzero((rows["theta"] == theta.numpy()).all(1))[0]  # a bank row, as it was stored
            assert train[2] == pytest.approx(float(costs.total[row]), abs=1e-9)
        best = torch.as_tensor(costs.total).min()
        assert results.costs["train"][:, 2].min() == pytest.approx(float(best), abs=1e-9)
        # the truth's reference total: the truth itself through the validation stage's R and noise
        vali = target.load("vali")
        theta = torch.as_tensor(target.truth)[None]
        truth = validate(theta, cfg_space(tiny), vali, simulator, repeats=3, seed=cfg.validation.seed)
        got = table["truth_total"][list(table["target"]).index(target.name)]
        assert got == pytest.approx(float(truth.costs.total[0]), abs=1e-6)  # targets.csv: 6 digits
    # no targets.path: the data config's folder is the one target, its results in the run folder
    single = compose_config("fit", [*_fit_overrides(tiny, bank), "strategy=bank", "strategy.top_k=3"])
    fit(single, tmp_path / "single")
    results = read_results(tmp_path / "single" / "results.csv", cfg_space(tiny))
    data = load_folder(tiny, "train", n_tr=100)
    best = float(cost_from_stats(stats, data.fc, data.fcd_cdf).total.min())
    assert results.costs["train"][:, 2].min() == pytest.approx(best, abs=1e-9)
    assert json.loads((tmp_path / "single" / "summary.json").read_text())["strategy"] == "bank"


def cfg_space(folder):
    from pmfm.data import load_folder
    from pmfm.params import ParamSpace

    return ParamSpace(load_folder(folder, "train", n_tr=100).basis())


def test_the_simulator_strategy_fits_every_target_in_one_batch_as_it_would_fit_each_alone(
    subjects, tiny, tmp_path
):
    from pmfm.pipelines.fit.run import fit
    from pmfm.pipelines.results import read_results

    search = ["strategy=simulator", "strategy.n_starts=2", "strategy.repeats=2", "strategy.cmaes.popsize=6",
              "strategy.cmaes.mu=2", "strategy.cmaes.max_generations=2"]  # fmt: skip
    together = compose_config(
        "fit", [*_fit_overrides(tiny, tmp_path / "b"), *search, f"targets.path={subjects}"]
    )
    fit(together, tmp_path / "together")
    summary = json.loads((tmp_path / "together" / "state" / "summary.json").read_text())
    assert summary["search"]["simulations"] == 2 * 2 * 6 * 2 * 2  # targets x starts x population x R x gens
    alone = compose_config("fit", [*_fit_overrides(tiny, tmp_path / "b"), *search,
                                   f"targets.path={subjects / 'synthetic_001'}"])  # fmt: skip
    fit(alone, tmp_path / "alone")
    space = cfg_space(tiny)
    batched = read_results(tmp_path / "together" / "synthetic_001" / "results.csv", space)
    single = read_results(tmp_path / "alone" / "synthetic_001" / "results.csv", space)  # a folder per target
    # batch-invariant simulations and the same starts and noise: the same search, the same chosen sets
    np.testing.assert_array_equal(batched.theta.numpy(), single.theta.numpy())
    np.testing.assert_array_equal(batched.costs["train"], single.costs["train"])


def test_compare_to_sets_two_many_target_fits_side_by_side(tmp_path):
    from pmfm.pipelines.fit.targets import TABLE_COLUMNS, compare_targets

    def table(folder, rows):
        folder.mkdir()
        lines = [",".join(TABLE_COLUMNS)] + [",".join(str(v) for v in row) for row in rows]
        (folder / "targets.csv").write_text("\n".join(lines) + "\n")

    nan = float("nan")
    table(
        tmp_path / "bank",
        [("a", 1.0, 0.03, nan, 100, 9, nan, nan, nan, nan), ("b", 0.5, 0.0, 0.4, 100, 9, 0, 0, 0, 0)],
    )
    table(
        tmp_path / "sim",
        [("b", 0.3, 0.0, 0.4, 500, 90, 0, 0, 0, 0), ("a", 0.9, 0.04, nan, 500, 90, nan, nan, nan, nan)],
    )
    text = compare_targets(tmp_path / "bank", tmp_path / "sim", "bank", plot=True)
    assert "mean difference (this - compare_to) +0.1500 +- 0.0500 (SE over 2 targets)" in text
    assert "simulations 200 against 1000" in text
    rows = (tmp_path / "bank" / "comparison.csv").read_text().split()
    assert rows[1] == "a,1,0.03,0.9,0.04,2" and rows[2].endswith(",nan")  # 0.1 / hypot(0.03, 0.04); SE 0
    assert (tmp_path / "bank" / "targets.png").stat().st_size > 10_000


def test_fit_acceptance_resimulates_each_targets_chosen_sets_and_truth_in_the_same_noise(
    tiny, subjects, tmp_path, monkeypatch
):
    import shutil

    import torch

    from pmfm.pipelines.fit.run import fit
    from pmfm.pipelines.results import read_results, write_results
    from pmfm.studies import fit_acceptance, run_study

    bank = tmp_path / "bank"
    _make(tiny, bank, tmp_path / "made")
    fit(compose_config("fit", [*_fit_overrides(tiny, bank), "strategy=bank", "strategy.top_k=3",
                               f"targets.path={subjects}"]), tmp_path / "ranked")  # fmt: skip
    shutil.copytree(tmp_path / "ranked", tmp_path / "truthful")  # the same fits, each choosing its truth
    space = cfg_space(tiny)
    for target in ("synthetic_000", "synthetic_001"):
        path = tmp_path / "truthful" / target / "results.csv"
        results = read_results(path, space)
        results.theta[0] = torch.as_tensor(
            np.loadtxt(subjects / target / "truth.csv", delimiter=",", skiprows=1)
        )
        write_results(path, results, space)
    overrides = [*tiny_overrides(tiny), "study=fit_acceptance", "plot=false", "progress=false",
                 f"study.simulator_run={tmp_path / 'ranked'}",
                 f"study.surrogate_runs=[{tmp_path / 'truthful'}]",
                 f"study.targets={subjects}", "study.repeats=2", "study.groups=3"]  # fmt: skip
    report = run_study(compose_config("experiment", overrides), tmp_path / "acceptance")
    ranked, truthful, deltas = [], [], []
    for entry in report["targets"].values():
        a, b, truth = entry["truthful"], entry["ranked"], entry["truth"]
        assert len(truth["group_totals"]) == 3 and b["simulations"] == 3 * 3  # top_k x R, from targets.csv
        assert a["group_totals"] == truth["group_totals"]  # the same set in the same noise: the same totals
        assert a["minus_truth"] == 0 and a["difference"] == pytest.approx(a["mean"] - b["mean"])
        assert a["difference_in_se"] == pytest.approx(a["difference"] / np.hypot(a["se"], b["se"]))
        ranked.append(b["mean"])
        truthful.append(a["mean"])
        deltas.append(a["difference"])
    c = report["comparison"]["truthful"]
    assert c["mean_difference"] == pytest.approx(np.mean(deltas))
    assert c["mean_difference_se"] == pytest.approx(np.std(deltas, ddof=1) / np.sqrt(2))
    assert (c["targets"], c["near_truth"], c["near_truth_of"]) == (2, 2, 2)
    se = [np.hypot(e["truthful"]["se"], e["ranked"]["se"]) for e in report["targets"].values()]
    assert c["within_2se"] == sum(d <= 2 * s for d, s in zip(deltas, se, strict=True))
    rows = np.genfromtxt(tmp_path / "acceptance" / "fit_acceptance_targets.csv", delimiter=",", names=True,
                         dtype=None, encoding=None)  # fmt: skip
    np.testing.assert_allclose(rows["ranked_mean"], ranked, rtol=1e-5)
    np.testing.assert_allclose(rows["truthful_mean"], rows["truth_mean"], rtol=1e-5)

    def no_simulation(*args, **kwargs):
        raise AssertionError("a resumed study simulated again")

    monkeypatch.setattr(fit_acceptance, "grouped_costs", no_simulation)  # every set was saved: none again
    again = run_study(compose_config("experiment", overrides), tmp_path / "acceptance")
    assert again["targets"] == report["targets"]


def test_targets_that_cannot_share_a_batch_or_a_table_are_refused_naming_the_file(subjects, tiny, tmp_path):
    from pmfm.pipelines.config import ConfigError
    from pmfm.pipelines.fit.run import fit
    from pmfm.pipelines.fit.targets import read_table

    def fit_copy(name, change):
        folder = tmp_path / name
        shutil.copytree(subjects, folder)
        change(folder / "synthetic_001")
        cfg = compose_config("fit", [*_fit_overrides(tiny, tmp_path / "b"), "strategy=simulator",
                                     f"targets.path={folder}"])  # fmt: skip
        fit(cfg, tmp_path / f"fit_{name}")

    def other_sc(target):
        sc = np.loadtxt(target / "sc_train.csv", delimiter=",")
        np.savetxt(target / "sc_train.csv", sc * 2, delimiter=",")

    def other_tr(target):
        info = json.loads((target / "target.json").read_text())
        (target / "target.json").write_text(json.dumps(info | {"tr_s": 0.725}))

    with pytest.raises(ConfigError, match=r"synthetic_001: another SC than .*synthetic_000"):
        fit_copy("sc", other_sc)
    with pytest.raises(
        ConfigError, match=r"synthetic_001/target.json: a TR of 0.725 s is not a whole number"
    ):
        fit_copy("tr", other_tr)
    (tmp_path / "table").mkdir()
    (tmp_path / "table" / "targets.csv").write_text("target,vali_total\na,low\n")
    with pytest.raises(ConfigError, match=r"targets.csv: not a targets table"):
        read_table(tmp_path / "table")
    (tmp_path / "bad_bank").mkdir()
    Bank(tmp_path / "bad_bank").path.write_text("{not json")
    with pytest.raises(DatasetError, match=r"bank.json: unreadable bank file"):
        Bank(tmp_path / "bad_bank").read()


def test_the_amortised_strategy_polishes_from_the_bank_within_its_budget_and_resumes(
    tiny, subjects, tmp_path
):
    import torch

    from pmfm.data.targets import find_targets
    from pmfm.models.emulator import EmulatorModule, emulated_costs
    from pmfm.pipelines.fit.run import fit
    from pmfm.pipelines.fit.state import RunState
    from pmfm.pipelines.results import read_results

    bank = tmp_path / "bank"
    _make(tiny, bank, tmp_path / "made")
    cfg = compose_config("fit", [*_fit_overrides(tiny, bank), *AMORTISED, f"targets.path={subjects}"])
    run = tmp_path / "fit"
    fit(cfg, run)
    summary = RunState(run).summary()
    # 2 targets x 2 starts x the emulator's best 2 of each population x 2 generations x R = 2
    assert summary["polish"]["simulations"] == 2 * 2 * 2 * 2 * 2
    assert summary["refine"]["simulations"] == 0 and summary["refine"]["surrogate_evaluations"] > 0
    table = (run / "targets.csv").read_text()
    counted = np.genfromtxt(run / "targets.csv", delimiter=",", names=True, dtype=None, encoding=None)
    for name, sims in zip(counted["target"], counted["simulations"], strict=True):
        own = RunState(run / name).summary()
        assert sims == 32 // 2 + own["validation"]["simulations"]  # its share of the polish, its validation
    space = cfg_space(tiny)
    emulator = EmulatorModule.load_from_checkpoint(run / "emulator.ckpt", map_location="cpu")
    refined = RunState(run).load("refine")
    assert refined.shape == (2 * 2, 10)  # a point per target and start
    for t, target in enumerate(find_targets(subjects)):
        results = read_results(run / target.name / "results.csv", space)
        assert len(results.theta) <= 3 + 2 * 2  # the bank's 3 and each polish start's best per generation
        data = target.load("train")
        rows = RunState(run / target.name).load("search")["theta"][
            :2
        ]  # its best diverse bank rows: the starts
        before = emulated_costs(emulator, space.normalise(rows), data.fc, data.fcd_cdf).total
        after = emulated_costs(
            emulator, space.normalise(refined[2 * t : 2 * t + 2]), data.fc, data.fcd_cdf
        ).total
        assert (after <= before + 1e-12).all()  # the refinement never hands on a set it scores worse
    fit(cfg, run)  # resumed: every stage found on disk, the same table
    assert (run / "targets.csv").read_text() == table
    assert torch.equal(RunState(run).load("refine"), refined)


def test_the_polish_joins_the_bank_fine_tunes_the_emulator_and_resumes_after_a_kill_to_the_same(
    tiny, subjects, tmp_path, monkeypatch
):
    import torch

    from pmfm.datasets.store import load_dataset
    from pmfm.pipelines.fit.run import fit
    from pmfm.pipelines.fit.state import RunState
    from pmfm.pipelines.results import read_results

    banks = tmp_path / "bank", tmp_path / "bank_copy"
    _make(tiny, banks[0], tmp_path / "made")
    shutil.copytree(banks[0], banks[1])
    n_bank = len(Bank(banks[0]).load()["theta"])
    extra = [*AMORTISED, "strategy.fine_tune.epochs=60", f"targets.path={subjects}"]
    runs = tmp_path / "fit", tmp_path / "killed"
    fit(compose_config("fit", [*_fit_overrides(tiny, banks[0]), *extra]), runs[0])

    save = RunState.save

    def killed_after_generation_2(self, name, obj):  # the shard written and the emulator tuned, not saved
        if name == "polish_progress" and obj["cmaes"]["generation"] == 2:
            raise KeyboardInterrupt
        save(self, name, obj)

    cfg = compose_config("fit", [*_fit_overrides(tiny, banks[1]), *extra])
    monkeypatch.setattr(RunState, "save", killed_after_generation_2)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, runs[1])
    monkeypatch.undo()
    fit(cfg, runs[1])

    parts = [[p for p in Bank(b).parts() if p.name.startswith("polish_")] for b in banks]
    assert [p.name for p in parts[0]] == [p.name for p in parts[1]] and len(parts[0]) == 1
    rows = load_dataset(parts[0][0])
    # 2 targets x 2 starts x the emulator's best 2 of each population x 2 generations, at the polish's R
    assert (
        len(rows["theta"]) == 16 and len(np.unique(rows["sample_id"])) == 16 and (rows["repeats"] == 2).all()
    )
    assert len(Bank(banks[0]).load()["theta"]) == n_bank + 16  # a later run ranks them too
    assert rows_checksum(load_dataset(parts[1][0])) == rows_checksum(rows)  # the rerun generation: not twice
    learned = [RunState(r).load("polish_progress")["learner"] for r in runs]
    assert len(learned[0]["report"]) == 2
    for _, n_new, before, after in learned[0]["report"]:
        assert n_new == 8 and after < before  # the emulator learns from what it chose
    for name, weights in learned[0]["emulator"].items():
        assert torch.equal(weights, learned[1]["emulator"][name]), name
    simulated = {tuple(t) for t in rows["theta"].tolist()}
    for found in RunState(runs[0]).load("polish"):  # each target's kept polish sets are rows of the part
        assert {tuple(t) for t in found["theta"].tolist()} <= simulated
    space = cfg_space(tiny)
    for name in ("synthetic_000", "synthetic_001"):
        results = [read_results(r / name / "results.csv", space) for r in runs]
        assert torch.equal(results[0].theta, results[1].theta)
        for stage, costs in results[0].costs.items():
            assert np.array_equal(costs, results[1].costs[stage], equal_nan=True), stage


def test_train_model_emulator_on_a_bank_reports_each_targets_held_out_ranking(tiny, tmp_path):
    from pmfm.models.emulator import EmulatorModule
    from pmfm.pipelines.emulator import train_emulator

    bank = tmp_path / "bank"
    _make(tiny, bank, tmp_path / "made")
    overrides = [o for o in _overrides(tiny, bank) if o.startswith(("data", "protocol", "device", "dataset"))]
    small = [
        "model=emulator",
        "model.hidden=16",
        "model.depth=1",
        "model.rank=4",
        "trainer.max_epochs=3",
        "logger=csv",
        "datamodule.split=[0.5,0.5,0]",
        "datamodule.test_groups=[start_00001]",
    ]
    cfg = compose_config("train", [*overrides, *small])
    metrics = train_emulator(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    names = sorted(k.split("/")[-1] for k in saved if k.startswith("test/cost_spearman/"))
    assert names == ["synthetic_000", "synthetic_001"]  # the bank's own targets, by default
    assert all(-1 <= saved[f"test/cost_spearman/{n}"] <= 1 for n in names)
    assert saved["test/cost_spearman_mean"] == pytest.approx(metrics["test/cost_spearman_mean"])
    last = EmulatorModule.load_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert last.hparams["rank"] == 4 and last.fc_dirs.shape[0] == 4
