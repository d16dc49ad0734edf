"""``python -m pmfm.targets``: targets from BOLD runs and synthetic subjects, checked against plain
numpy; bad run files; the protocol of a target's TR and length; reading target folders."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TINY_REGIONS, compose_config
from scipy.io import savemat

from pmfm.cost import KONG2021, fcd_cdf, fcd_pair_count
from pmfm.data import DataError, bundled_path, find_targets, load, load_folder
from pmfm.data.checks import check_fcd_cdf
from pmfm.evaluate import repeat_noise
from pmfm.params import COEFFICIENT_NAMES, ParamSpace
from pmfm.pipelines.config import ConfigError, exit_on_user_error, simulator_of
from pmfm.pipelines.targets import (
    NOISE_SEED_BASE,
    dataset_bases,
    draw_truth,
    make_targets,
    near_dataset,
)
from pmfm.sim import SimProtocol, simulate
from pmfm.sim.protocol import protocol_for_run

N_TR = 200  # TRs of the test runs
EDGES = (KONG2021.hist_min, KONG2021.hist_max)


# -- plain numpy: what the targets must equal ------------------------------------------------------
def numpy_fcd_cdf(x: np.ndarray, window: int = 83) -> np.ndarray:
    """Count CDF of the FCD of one run (N, T): sliding-window FC upper triangles, their correlations'
    strict upper triangle, np.histogram with the cost's bins, cumulated."""
    iu = np.triu_indices(len(x), 1)
    windows = np.array([np.corrcoef(x[:, t : t + window])[iu] for t in range(x.shape[1] - window + 1)])
    fcd = np.corrcoef(windows)
    counts, _ = np.histogram(fcd[np.triu_indices(len(fcd), 1)], bins=KONG2021.n_bins, range=EDGES)
    return np.cumsum(counts)


def numpy_target(runs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Fisher-z mean FC (diagonal 1) and MATLAB-rounded mean count CDF of runs (N, T)."""
    fc = np.tanh(np.mean([np.arctanh(np.clip(np.corrcoef(x), -1 + 1e-15, 1 - 1e-15)) for x in runs], axis=0))
    np.fill_diagonal(fc, 1.0)
    cdf = np.mean([numpy_fcd_cdf(x) for x in runs], axis=0)
    return fc, np.floor(cdf + 0.5)


def bold_run(rng, n: int = TINY_REGIONS, t: int = N_TR) -> np.ndarray:
    """A run with a shared signal (positive FC) that drifts (FCD with structure)."""
    x = rng.standard_normal((n, t))
    shared = np.convolve(rng.standard_normal(t + 20), np.ones(20) / 20, mode="valid")[:t]
    return x + 2.0 * shared * np.linspace(0.2, 1.5, n)[:, None]


def write_run(path, x: np.ndarray) -> None:
    if path.suffix == ".npy":
        np.save(path, x)
    elif path.suffix == ".csv":
        np.savetxt(path, x, delimiter=",", fmt="%.17g")
    else:
        savemat(path, {"TC": x})


def overrides(tiny_folder, tmp_path, *extra) -> list[str]:
    """The targets config on the tiny folder's SC and covariates (8 regions)."""
    return [
        "data=folder",
        f"data.path={tiny_folder}",
        "data.split=test",
        "protocol=tiny",
        "device=cpu",
        "progress=false",
        f"out={tmp_path / 'targets'}",
        f"n_tr={N_TR}",
        *extra,
    ]


@pytest.fixture
def cohort(tmp_path):
    """Three subjects, one file type each: 4 .npy runs, 5 .csv runs, 4 .mat runs."""
    rng = np.random.default_rng(7)
    runs = {}
    for subject, suffix, n_runs in (("sub-a", ".npy", 4), ("sub-b", ".csv", 5), ("sub-c", ".mat", 4)):
        folder = tmp_path / "bold" / subject
        folder.mkdir(parents=True)
        runs[subject] = []
        for r in range(n_runs):
            x = bold_run(rng)
            write_run(folder / f"run{r + 1}{suffix}", x)
            runs[subject].append(x)
    (tmp_path / "bold" / "sub-a" / "notes.txt").write_text("not a run")  # ignored
    return tmp_path / "bold", runs


# -- from BOLD -------------------------------------------------------------------------------------
def test_bold_targets_equal_plain_numpy_and_load(cohort, tiny_folder, tmp_path):
    bold, runs = cohort
    cfg = compose_config(
        "targets", overrides(tiny_folder, tmp_path, f"bold={bold}", "splits={train: 2, vali: null}")
    )
    made = make_targets(cfg, tmp_path)
    assert [m.name for m in made] == ["sub-a", "sub-b", "sub-c"]
    assert [m.runs for m in made] == [
        {"train": 2, "vali": 2},
        {"train": 2, "vali": 3},
        {"train": 2, "vali": 2},
    ]

    targets = find_targets(tmp_path / "targets")
    assert [t.name for t in targets] == ["sub-a", "sub-b", "sub-c"]
    sc = np.loadtxt(tiny_folder / "sc_test.csv", delimiter=",")
    for target in targets:
        assert (target.source, target.tr_s, target.n_tr, target.truth) == ("bold", 0.72, N_TR, None)
        assert target.splits == ["train", "vali"]
        x = runs[target.name]
        for split, chosen in (("train", x[:2]), ("vali", x[2:])):
            fc, cdf = numpy_target(chosen)
            data = load(target.folder, split, n_tr=N_TR)  # the loader's checks pass
            np.testing.assert_allclose(data.fc, fc, rtol=0, atol=1e-10)
            np.testing.assert_allclose(data.fcd_cdf, cdf, rtol=0, atol=1e-10)
            assert data.fcd_cdf.dtype == np.int64 and data.fcd_total == fcd_pair_count(N_TR, 83) == 6903
            np.testing.assert_array_equal(data.sc, sc)
            assert target.info["runs"][split] == [
                f"run{i + 1}{_suffix(target.name)}" for i in _indices(split, x)
            ]
    # the averages are not one run's: each split's FC differs from its first run's
    one = np.corrcoef(runs["sub-a"][0])
    assert np.abs(load(targets[0].folder, "train", n_tr=N_TR).fc - one).max() > 0.01


def _suffix(name: str) -> str:
    return {"sub-a": ".npy", "sub-b": ".csv", "sub-c": ".mat"}[name]


def _indices(split: str, runs: list) -> range:
    return range(0, 2) if split == "train" else range(2, len(runs))


def test_unrounded_mean_cdf_loads_as_float(cohort, tiny_folder, tmp_path):
    bold, runs = cohort
    cfg = compose_config(
        "targets", overrides(tiny_folder, tmp_path, f"bold={bold / 'sub-a'}", "round_fcd=false")
    )  # a folder of run files is one subject
    (made,) = make_targets(cfg, tmp_path)
    data = load_folder(made.folder, "train", n_tr=N_TR)
    exact = np.mean([numpy_fcd_cdf(x) for x in runs["sub-a"][:2]], axis=0)
    assert data.fcd_cdf.dtype == np.float64 and np.any(data.fcd_cdf % 1 == 0.5)
    np.testing.assert_allclose(data.fcd_cdf, exact, rtol=0, atol=1e-10)


def test_fcd_check_takes_whole_or_mean_counts_and_keeps_the_total(tmp_path):
    total = fcd_pair_count(N_TR, 83)
    cdf = np.linspace(0, total, 10_000)  # non-integer, ends at the total
    out = check_fcd_cdf(cdf, tmp_path / "f.mat", n_bins=10_000, n_tr=N_TR, window=83)
    assert out.dtype == np.float64 and out[-1] == total
    near = cdf.copy()
    near[-1] = total * (1 + 5e-7)
    assert check_fcd_cdf(near, tmp_path / "f.mat", n_bins=10_000, n_tr=N_TR, window=83)[-1] == near[-1]
    far = cdf.copy()
    far[-1] = total + 0.5
    with pytest.raises(DataError, match=r"FCD CDF ends at 6903.5; expected final total 6903 \(within 1e-06"):
        check_fcd_cdf(far, tmp_path / "f.mat", n_bins=10_000, n_tr=N_TR, window=83)
    whole = np.round(cdf)
    assert check_fcd_cdf(whole, tmp_path / "f.mat", n_bins=10_000, n_tr=N_TR, window=83).dtype == np.int64
    dips = cdf.copy()
    dips[5000] = dips[4999] - 0.25
    with pytest.raises(DataError, match="FCD CDF decreases at bin 5000"):
        check_fcd_cdf(dips, tmp_path / "f.mat", n_bins=10_000, n_tr=N_TR, window=83)


BAD_RUNS = {
    "not-2d": (lambda x: x[None], r"run has shape \(1, 8, 200\); expected a 2-D array, regions x TRs"),
    "regions": (lambda x: x[:7], "run has 7 regions \\(rows\\); expected 8 regions, as the SC"),
    "nan": (
        lambda x: _with(x, (2, 5), np.nan),
        r"run has 1 NaN/Inf value\(s\), first at row 2, col 5; expected finite",
    ),
    "inf": (lambda x: _with(x, (0, 0), np.inf), r"run has 1 NaN/Inf value\(s\), first at row 0, col 0"),
    "too-short": (
        lambda x: x[:, :50],
        "run has 50 TRs, too short for one FCD window; expected at least 83 TRs",
    ),
    "wrong-length": (lambda x: x[:, :150], f"run has 150 TRs; expected n_tr = {N_TR} TRs per run"),
    "transposed": (lambda x: x.T, r"run has 200 regions \(rows\) \(TRs x regions\? runs are regions x TRs\)"),
}


def _with(x: np.ndarray, index, value) -> np.ndarray:
    x = x.copy()
    x[index] = value
    return x


def bad_cohort(tmp_path, change, suffix: str = ".npy"):
    """One subject, two runs; the second run changed by ``change``. Returns (cohort, bad file)."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "bad" / "sub-x"
    folder.mkdir(parents=True)
    write_run(folder / f"run1{suffix}", bold_run(rng))
    bad = folder / f"run2{suffix}"
    write_run(bad, change(bold_run(rng)))
    return tmp_path / "bad", bad


@pytest.mark.parametrize("case", BAD_RUNS)
def test_a_bad_run_names_its_file_and_exits_2(case, tiny_folder, tmp_path, capsys):
    change, message = BAD_RUNS[case]
    bold, bad = bad_cohort(tmp_path, change)
    cfg = compose_config(
        "targets", overrides(tiny_folder, tmp_path, f"bold={bold}", "splits={train: 1, vali: 1}")
    )
    with pytest.raises(DataError, match=message) as err:
        make_targets(cfg, tmp_path)
    assert err.value.path == bad.resolve()
    with pytest.raises(SystemExit) as stop:
        exit_on_user_error(make_targets, cfg, tmp_path)
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {bad.resolve()}: ")
    assert not (tmp_path / "targets" / "sub-x").exists()  # nothing half-written


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"a": np.ones((8, 200)), "b": np.ones((8, 200))}, r"2 2-D numeric variables \(variables found: a"),
        ({"name": "text"}, "0 2-D numeric variables"),
    ],
)
def test_a_mat_run_needs_one_2d_variable(content, message, tiny_folder, tmp_path):
    folder = tmp_path / "bad" / "sub-x"
    folder.mkdir(parents=True)
    savemat(folder / "run1.mat", content)
    cfg = compose_config(
        "targets", overrides(tiny_folder, tmp_path, f"bold={tmp_path / 'bad'}", "splits={train: 1, vali: 0}")
    )
    with pytest.raises(DataError, match=message + ".*expected exactly one 2-D numeric variable"):
        make_targets(cfg, tmp_path)


def test_too_few_runs_and_existing_targets_are_refused(cohort, tiny_folder, tmp_path):
    bold, _ = cohort
    cfg = compose_config(
        "targets", overrides(tiny_folder, tmp_path, f"bold={bold}", "splits={train: 3, vali: 2}")
    )
    with pytest.raises(DataError, match=r"sub-a: 4 run file\(s\); expected at least 5 runs"):
        make_targets(cfg, tmp_path)
    cfg = compose_config("targets", overrides(tiny_folder, tmp_path, f"bold={bold / 'sub-a'}"))
    make_targets(cfg, tmp_path)
    with pytest.raises(ConfigError, match="sub-a exist already; overwrite=true replaces them"):
        make_targets(cfg, tmp_path)


def test_command_line_exits_2_naming_the_bad_file(tiny_folder, tmp_path):
    bold, bad = bad_cohort(tmp_path, lambda x: x[:, :150], suffix=".csv")
    proc = subprocess.run(
        [sys.executable, "-m", "pmfm.targets", *overrides(tiny_folder, tmp_path, f"bold={bold}"),
         "splits={train: 1, vali: 1}", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"error: {bad.resolve()}: run has 150 TRs; expected n_tr = {N_TR} TRs per run" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- the protocol follows the target ---------------------------------------------------------------
def test_protocol_for_a_run_of_another_tr_and_length():
    full = SimProtocol(**{k: v for k, v in compose_config("targets").protocol.items()})
    assert protocol_for_run(1200, 0.72) == full == SimProtocol()  # the full protocol, unchanged
    assert (full.main_steps, full.n_samples) == (98_401, 1_367)
    p = protocol_for_run(150, 0.8)
    assert (p.tr_steps, p.n_tr, p.dt, p.warmup_steps, p.burn_in_samples) == (80, 150, 0.01, 1000, 150)
    np.testing.assert_allclose(np.diff(p.kept_times_s()), 0.8)
    assert p.burn_in_samples * p.tr_s == pytest.approx(167 * 0.72, abs=0.8)  # about the same seconds
    assert protocol_for_run(300, 2.0).tr_steps == 200 and protocol_for_run(300, 2.0).n_tr == 300
    with pytest.raises(ValueError, match="not a whole number of simulation steps"):
        protocol_for_run(100, 0.725)
    with pytest.raises(ValueError, match="whole number of TRs"):
        protocol_for_run(0, 0.72)


def test_a_target_of_another_tr_gets_the_matching_protocol(tiny_folder, tmp_path):
    rng = np.random.default_rng(5)
    folder = tmp_path / "bold" / "sub-slow"
    folder.mkdir(parents=True)
    for r in range(2):
        np.save(folder / f"run{r}.npy", bold_run(rng, t=150))
    cfg = compose_config(
        "targets",
        overrides(tiny_folder, tmp_path, f"bold={tmp_path / 'bold'}", "splits={train: 1, vali: 1}")
        + ["n_tr=150", "tr_s=0.8"],
    )
    make_targets(cfg, tmp_path)
    (target,) = find_targets(tmp_path / "targets")
    assert (target.tr_s, target.n_tr) == (0.8, 150)
    tiny = simulator_of(cfg)
    protocol = protocol_for_run(target.n_tr, target.tr_s, tiny.protocol)
    assert (protocol.tr_steps, protocol.n_tr, protocol.warmup_steps) == (80, 150, tiny.protocol.warmup_steps)
    data = target.load("train")
    space = ParamSpace(data.basis())
    sim = simulate(
        torch.tensor([[0.3, 0, 0, 0.28, 0, 0, 1.5, 0.005, 0, 0]]), space, data.sc,
        dataclasses.replace(tiny, protocol=protocol),
    )  # fmt: skip
    assert sim.bold.shape == (1, TINY_REGIONS, 150)
    assert int(fcd_cdf(sim.bold.double())[0, -1]) == data.fcd_total == fcd_pair_count(150, 83) == 2278


# -- reading targets -------------------------------------------------------------------------------
def test_find_targets_reads_folders_and_the_bundled_group(tmp_path):
    (group,) = find_targets(bundled_path())
    assert (group.name, group.source, group.tr_s, group.n_tr, group.truth) == (
        "hcp_desikan68", "folder", 0.72, 1200, None
    )  # fmt: skip
    assert group.load("vali").fcd_total == 624_403
    with pytest.raises(DataError, match="no target here"):
        find_targets(tmp_path)
    bad = tmp_path / "t"
    bad.mkdir()
    (bad / "target.json").write_text(json.dumps({"tr_s": 0.72, "n_tr": "long", "source": "bold"}))
    with pytest.raises(DataError, match=r"target.json: n_tr is 'long'; expected a positive whole number"):
        find_targets(tmp_path)


# -- synthetic subjects ----------------------------------------------------------------------------
def synthetic_config(tiny_folder, out, *extra):
    return compose_config(
        "targets",
        [
            "data=folder", f"data.path={tiny_folder}", "data.split=test", "protocol=tiny", "device=cpu",
            "progress=false", f"out={out}", "synthetic_runs={train: 2, vali: 2}",
            "synthetic_truth.from_dataset=0", *extra,
        ],
    )  # fmt: skip


def test_synthetic_subjects_are_their_runs_averaged_and_reproducible(tiny_folder, tmp_path):
    cfg = synthetic_config(tiny_folder, tmp_path / "a", "synthetic=3")
    made = make_targets(cfg, tmp_path)
    assert [m.name for m in made] == ["synthetic_000", "synthetic_001", "synthetic_002"]
    targets = find_targets(tmp_path / "a")
    data = load_folder(tiny_folder, "test", n_tr=100)
    space = ParamSpace(data.basis())
    for t in targets:
        assert (t.source, t.tr_s, t.n_tr, t.truth_names) == ("synthetic", 0.72, 100, COEFFICIENT_NAMES)
        assert t.truth is not None and bool(space.is_feasible(torch.tensor(t.truth)[None])[0])
        k = int(t.name.split("_")[1])  # runs: noise streams 4 k + r
        assert t.info["runs"] == {"train": [4 * k, 4 * k + 1], "vali": [4 * k + 2, 4 * k + 3]}
        maps = np.loadtxt(t.folder / "truth_maps.csv", delimiter=",", skiprows=1)
        np.testing.assert_allclose(maps[:, 1], space.regional(torch.tensor(t.truth)[None]).w[0].numpy())

    # subject 1 again, by hand: its 4 runs with noise streams 4 + r, averaged in plain numpy
    k, t = 1, targets[1]
    truth = torch.tensor(t.truth)[None].repeat(4, 1)
    noise = repeat_noise(1, 4, NOISE_SEED_BASE + 1, sample_ids=[k])
    bold = simulate(truth, space, data.sc, simulator_of(cfg), noise).bold.double().numpy()  # (4, N, T)
    for split, runs in (("train", bold[:2]), ("vali", bold[2:])):
        fc, cdf = numpy_target(list(runs))
        loaded = t.load(split)
        np.testing.assert_allclose(loaded.fc, fc, rtol=0, atol=1e-10)
        np.testing.assert_array_equal(loaded.fcd_cdf, cdf)
        np.testing.assert_array_equal(loaded.sc, data.sc)
        assert loaded.fcd_total == fcd_pair_count(100, 83)
    # the noise is independent from run to run: the two training runs differ
    assert np.abs(np.corrcoef(bold[0]) - np.corrcoef(bold[1])).max() > 0.05

    # the reported split correlation is that of the written FCs
    iu = np.triu_indices(TINY_REGIONS, 1)
    r = np.corrcoef(t.load("train").fc[iu], t.load("vali").fc[iu])[0, 1]
    assert t.info["fc_split_r"] == pytest.approx(r, abs=1e-12) and made[1].fc_split_r == pytest.approx(r)

    # different subjects differ
    fcs = [t.load("train").fc for t in targets]
    assert not np.allclose(targets[0].truth, targets[1].truth)
    assert np.abs(fcs[0] - fcs[1]).max() > 0.05 and np.abs(fcs[1] - fcs[2]).max() > 0.05

    # the same seed gives the same subjects, however many are made; another seed others
    make_targets(synthetic_config(tiny_folder, tmp_path / "b", "synthetic=2"), tmp_path)
    again = find_targets(tmp_path / "b")
    np.testing.assert_array_equal(again[1].truth, targets[1].truth)
    for split in ("train", "vali"):
        np.testing.assert_array_equal(again[1].load(split).fc, targets[1].load(split).fc)
        np.testing.assert_array_equal(again[1].load(split).fcd_cdf, targets[1].load(split).fcd_cdf)
    make_targets(synthetic_config(tiny_folder, tmp_path / "c", "synthetic=1", "seed=2"), tmp_path)
    assert not np.allclose(find_targets(tmp_path / "c")[0].truth, targets[0].truth)


def test_synthetic_truths_near_the_shipped_datasets_best_sets():
    data = load(None, "train")
    space = ParamSpace(data.basis())
    bases = dataset_bases(space, None)
    assert len(bases) == 8  # the best valid set of each of its 8 CMA-ES runs, best first
    assert "CMA-ES run 4's best (total 1.178)" in bases[0][1]
    assert [near_dataset(k, 0.5) for k in range(6)] == [None, 0, None, 1, None, 2]
    assert [near_dataset(k, 1.0) for k in range(3)] == [0, 1, 2]
    assert [near_dataset(k, 0.0) for k in range(3)] == [None, None, None]
    near = draw_truth(1, space, 1, bases, 0.5, 0.02)  # subject 1: near the best run's best set
    assert near.kind == "dataset" and bool(space.is_feasible(torch.tensor(near.theta)[None])[0])
    step = space.normalise(torch.tensor(near.theta)[None]) - space.normalise(torch.tensor(bases[0][0])[None])
    assert 0 < float(step.abs().max()) < 0.02 * 5
    assert np.array_equal(draw_truth(1, space, 1, bases, 0.5, 0.02).theta, near.theta)  # seeded
    far = draw_truth(0, space, 1, bases, 0.5, 0.02)
    assert far.kind == "random" and bool(space.is_feasible(torch.tensor(far.theta)[None])[0])
    third = draw_truth(3, space, 1, bases, 0.5, 0.02)  # the second dataset subject: the second-best run
    step = space.normalise(torch.tensor(third.theta)[None]) - space.normalise(torch.tensor(bases[1][0])[None])
    assert float(step.abs().max()) < 0.1


def test_truths_below_the_reliability_floor_are_drawn_again_until_max_draws(tiny_folder, tmp_path):
    cfg = synthetic_config(
        tiny_folder, tmp_path / "a", "synthetic=1", "synthetic_truth.min_reliability=1.0",
        "synthetic_truth.max_draws=2",
    )  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"synthetic_000: 2 truths in a row were refused \(the last: its splits' FC"
    ):
        make_targets(cfg, tmp_path)
    assert not (tmp_path / "a" / "synthetic_000").exists()
