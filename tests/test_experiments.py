"""python -m pmfm.experiment study=<name>: every study at its smallest size (tiny 8-region data, 100 TRs),
its table's columns and one invariant each."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import SMALL_BANK, tiny_overrides, write_synthetic_dataset
from hydra import compose, initialize_config_module

from pmfm.data import load_folder
from pmfm.params import ParamSpace
from pmfm.studies import run_study
from pmfm.studies.report import read_table


def _compose(study: str, *overrides):
    return compose("experiment", overrides=[f"study={study}", "plot=false", *overrides])


def _run(study: str, folder, out_dir, *extra):
    """The study on the tiny folder; its summary and table (results.csv)."""
    with initialize_config_module("pmfm.conf", version_base="1.3"):
        summary = run_study(_compose(study, *tiny_overrides(folder), *extra), out_dir)
    table = read_table(out_dir / "results.csv")
    assert json.loads((out_dir / "summary.json").read_text())["conclusion"]
    assert (out_dir / "summary.md").is_file()
    return summary, table


def _values(node: str, **values) -> list[str]:
    """Hydra add-or-override strings for the values of a study's ``{groups, values}`` node; nested keys
    as ``a__b`` (``trainer__max_epochs=3`` -> ``++<node>.values.trainer.max_epochs=3``)."""
    return [f"++{node}.values.{k.replace('__', '.')}={v}" for k, v in values.items()]


def _tiny_space(folder) -> ParamSpace:
    return ParamSpace(load_folder(folder, "test", n_tr=100).basis())


def test_sc_insensitivity_identical_sc_differs_by_nothing_and_less_than_the_repeat_spread(
    tiny_folder, tmp_path
):
    summary, table = _run(
        "sc_insensitivity", tiny_folder, tmp_path,
        "study.sets=random", "study.n_sets=4", "study.other_split=null", "study.noise_log_sd=0.3",
    )  # fmt: skip
    assert set(table[0]) >= {"set", "condition", "total", "abs_diff_vs_train", "repeats"}
    conditions = {r["condition"]: r for r in summary["conditions"]}
    assert set(conditions) == {"identical", "noise_x1", "noise_x3", "repeat (same SC, fresh noise)"}
    spread = summary["repeat_spread_mean"]
    assert spread > 0  # fresh noise changes the costs
    # the invariant: an identical SC with the same noise gives the reference's costs exactly
    assert conditions["identical"]["mean_abs_diff"] == 0.0 < spread
    assert conditions["noise_x3"]["mean_abs_diff"] > 0  # a perturbed SC does change the simulation


def test_smoothness_distances_are_along_segments_and_far_pairs_differ_beyond_the_noise(tiny_folder, tmp_path):
    summary, table = _run(
        "smoothness", tiny_folder, tmp_path,
        "study.sets=random", "study.n_segments=3", "study.fractions=[0,0.1,0.3,1]", "study.n_bins=3",
    )  # fmt: skip
    assert set(table[0]) >= {"segment", "fraction", "distance_from_start", "total_run1", "total_run2"}
    for seg in {r["segment"] for r in table}:
        rows = [r for r in table if r["segment"] == seg]
        d = np.array([float(r["distance_from_start"]) for r in rows])
        t = np.array([float(r["fraction"]) for r in rows])
        np.testing.assert_allclose(d, t * d[-1], rtol=1e-5)  # points lie on the straight segment
    assert summary["noise_floor_mean"] > 0
    # the invariant: whole-segment moves change the cost by more than the noise floor
    assert summary["bins"][-1]["mean_abs_diff"] > summary["noise_floor_mean"]


def test_model_comparison_trains_every_model_and_seed_and_names_the_winner(tmp_path):
    from pmfm.data import load_bundled

    dataset = write_synthetic_dataset(
        tmp_path / "ds", ParamSpace(load_bundled().basis()), n_runs=8, per_run=20
    )
    train = _values("study.train", dataset__folder=dataset, trainer__max_epochs=1, datamodule__batch_size=64,
                    trainer__accelerator="cpu")  # fmt: skip
    with initialize_config_module("pmfm.conf", version_base="1.3"):
        cfg = _compose("model_comparison", "device=cpu", "study.models=[mlp_coefficients,ensemble]",
                       "study.seeds=[1,2]", "study.eval_batch=256", *train)  # fmt: skip
        summary = run_study(cfg, tmp_path / "out")
    table = read_table(tmp_path / "out" / "results.csv")
    assert set(table[0]) >= {"model", "seed", "test/spearman", "test/spearman_top10", "test/top5_recall",
                             "test/mae_fc_cost", "evals_per_s"}  # fmt: skip
    assert sorted((r["model"], r["seed"]) for r in table) == [("ensemble", "1"), ("ensemble", "2"),
                                                              ("mlp_coefficients", "1"),
                                                              ("mlp_coefficients", "2")]  # fmt: skip
    assert all(float(r["evals_per_s"]) > 0 for r in table)
    # each run folder says what it trained, as pmfm.compare labels it: the variant's values applied
    compared = read_table(tmp_path / "out" / "train" / "comparison.csv")
    labels = {r["run"]: r["label"] for r in compared}
    assert labels["mlp_coefficients_seed1"] == "model=mlp model.network_hparams.features=coefficients"
    assert labels["ensemble_seed2"] == "model=ensemble"
    config = (tmp_path / "out" / "train" / "mlp_coefficients_seed2" / ".hydra" / "config.yaml").read_text()
    assert "features: coefficients" in config and "seed: 2" in config
    # the invariant: the seeds were applied (runs of one model differ) and the named winner has the best mean
    for model in ("mlp_coefficients", "ensemble"):
        assert len({r["test/spearman"] for r in table if r["model"] == model}) == 2
    means = {e["model"]: e["test/spearman mean"] for e in summary["per_model"]}
    assert summary["winner"] == max(means, key=means.get)


def test_search_comparison_penalty_keeps_the_search_where_the_ensemble_agrees_and_the_ceiling(
    tiny_folder, tmp_path
):
    dataset = write_synthetic_dataset(tmp_path / "ds", _tiny_space(tiny_folder), n_runs=8, per_run=20)
    train = _values("study.train", dataset__folder=dataset, model__network_hparams__k=3,
                    trainer__max_epochs=3, trainer__accelerator="cpu")  # fmt: skip
    small = [f"study.arms.{arm}.{k}={v}" for arm in ("cmaes", "cmaes_penalised")
             for k, v in (("popsize", 12), ("mu", 3), ("max_generations", 6))]  # fmt: skip
    summary, table = _run(
        "search_comparison", tiny_folder, tmp_path / "out", "study.n_starts=3", "study.top_k=2", *train,
        *small, "study.arms.adam.steps=10", "study.arms.cmaes_penalised.uncertainty_penalty=5",
    )  # fmt: skip
    assert set(table[0]) >= {"arm", "rank", "predicted_total", "predicted_std", "simulated_total", "valid",
                             "abs_error"}  # fmt: skip
    arms = {a["arm"]: a for a in summary["arms"]}
    assert set(arms) == {"cmaes", "adam", "cmaes_penalised"}
    assert all(0 <= a["invalid_share"] <= 1 for a in arms.values())
    # the same starts for every searcher; the invariant: the penalty lowers the members' disagreement
    assert {r["start"] for r in table} <= {"1", "2", "3", "0"}
    assert arms["cmaes_penalised"]["mean_predicted_std"] <= arms["cmaes"]["mean_predicted_std"]

    # surrogate_ceiling on the same dataset: every row re-simulated, then the ceiling from those rows
    fresh = tmp_path / "fresh.npz"
    ckpt = tmp_path / "out" / "surrogate" / "checkpoints" / "last.ckpt"
    with initialize_config_module("pmfm.conf", version_base="1.3"):
        on = [*tiny_overrides(tiny_folder), f"study.dataset={dataset}"]
        everything = run_study(
            _compose("surrogate_ceiling", *on, f"study.resimulate_all={fresh}"), tmp_path / "all"
        )
        cfg = _compose("surrogate_ceiling", *on, f"study.fresh={fresh}", f"study.ckpt={ckpt}")
        ceiling = run_study(cfg, tmp_path / "ceiling")
    from pmfm.datasets import load_dataset

    saved = np.load(fresh)
    assert everything["rows"] == len(saved["total"]) == 8 * 20
    np.testing.assert_array_equal(saved["stored"], load_dataset(dataset)["total"])  # row for row
    assert json.loads((tmp_path / "ceiling" / "surrogate_ceiling.json").read_text()) == pytest.approx(ceiling)
    # the test split is one CMA-ES run of 20 (the valid ones); the ceiling is the Spearman of stored vs fresh
    assert 0 < ceiling["n_test"] <= 20
    for key in ("ceiling_spearman", "ceiling_spearman_top10", "surrogate_spearman"):
        assert -1 <= ceiling[key] <= 1
    assert ceiling["share_of_ceiling_top10"] == pytest.approx(
        ceiling["surrogate_spearman_top10"] / ceiling["ceiling_spearman_top10"]
    )


def test_surrogate_ceiling_of_a_noise_free_resimulation_is_one(tiny_folder, tmp_path):
    """The ceiling is the stored totals' Spearman with the fresh ones: fresh == stored gives exactly 1."""
    dataset = write_synthetic_dataset(tmp_path / "ds", _tiny_space(tiny_folder), n_runs=4, per_run=20)
    from pmfm.datasets import load_dataset

    fresh = tmp_path / "same.npz"
    np.savez(fresh, total=load_dataset(dataset)["total"])
    with initialize_config_module("pmfm.conf", version_base="1.3"):
        cfg = _compose("surrogate_ceiling", *tiny_overrides(tiny_folder), f"study.dataset={dataset}",
                       f"study.fresh={fresh}")  # fmt: skip
        result = run_study(cfg, tmp_path / "out")
    assert result["ceiling_spearman"] == pytest.approx(1.0, abs=1e-4)
    assert result["ceiling_spearman_top10"] == pytest.approx(1.0, abs=1e-4)


def test_surrogate_cv_holds_out_every_run_and_reuses_its_predictions(tiny_folder, tmp_path):
    dataset = write_synthetic_dataset(tmp_path / "ds", _tiny_space(tiny_folder), n_runs=4, per_run=20)
    from pmfm.datasets import load_dataset

    rows = load_dataset(dataset)
    fresh = tmp_path / "same.npz"
    np.savez(fresh, total=rows["total"])  # a "re-simulation" equal to the stored totals: ceiling 1
    predictions = tmp_path / "pred.npz"
    args = [*tiny_overrides(tiny_folder), "model.network_hparams.features=coefficients", "study.epochs=2",
            f"study.dataset={dataset}", f"study.predictions={predictions}",
            f"study.fresh={fresh}"]  # fmt: skip
    with initialize_config_module("pmfm.conf", version_base="1.3"):
        first = run_study(_compose("surrogate_cv", *args), tmp_path / "first")
        again = run_study(_compose("surrogate_cv", *args), tmp_path / "again")  # from the saved predictions
        with pytest.raises(ValueError, match="holds predictions of"):  # other settings: refused
            run_study(_compose("surrogate_cv", *args, "study.rank_weight=1"), tmp_path / "other")
    assert first["samples"] == len(rows["total"]) and first["runs"] == 4
    assert set(first["spearman_within_run"]) == {0, 1, 2, 3}
    assert np.isfinite(np.load(predictions)["total"]).all()  # every row was predicted by a held-out model
    assert again["pooled"] == pytest.approx(first["pooled"], nan_ok=True)
    assert first["per_run_mean"]["ceiling_spearman"] == pytest.approx(1.0, abs=1e-4)
    saved = json.loads((tmp_path / "first" / "surrogate_cv.json").read_text())
    assert saved["spearman_within_run_mean"] == pytest.approx(
        np.mean(list(first["spearman_within_run"].values()))
    )


def test_emulator_cv_holds_out_every_cmaes_run_and_resumes_from_its_checkpoints(tiny_splits, tmp_path):
    from pmfm.datasets.bank import Bank
    from pmfm.datasets.bank_datamodule import BankDataModule
    from pmfm.models.emulator import EmulatorModule
    from pmfm.pipelines.dataset import make_dataset
    from pmfm.studies.emulator_cv import mean_prediction

    bank = tmp_path / "bank"
    small = [*SMALL_BANK, f"dataset.folder={bank}"]
    with initialize_config_module("pmfm.conf", version_base="1.3"):
        made = [o.replace("data.split=test", "data.split=train") for o in tiny_overrides(tiny_splits)]
        (tmp_path / "made").mkdir()
        make_dataset(compose("generate", overrides=[*made, *small]), tmp_path / "made")
    args = [f"study.bank={bank}", "study.members=2", "study.epochs=3", "model.hidden=16", "model.depth=1",
            "model.rank=4"]  # fmt: skip
    summary, table = _run("emulator_cv", tiny_splits, tmp_path / "cv", *args)
    checkpoints = sorted((tmp_path / "cv" / "members").glob("*.ckpt"))
    assert len(checkpoints) == 4  # 2 held-out runs x 2 members
    runs = sorted({r["run"] for r in summary["per_run"]})
    assert len(runs) == 2 and all(r.startswith("cmaes_synthetic_00") for r in runs)
    own = {(r["target"], r["run"][:19]) for r in summary["per_run"] if r["own_target"]}
    assert own == {
        ("bank/synthetic_000", "cmaes_synthetic_000"),
        ("bank/synthetic_001", "cmaes_synthetic_001"),
    }
    assert [r["target"] for r in table] == ["bank/synthetic_000", "bank/synthetic_001"]
    times = [c.stat().st_mtime_ns for c in checkpoints]
    again, _ = _run("emulator_cv", tiny_splits, tmp_path / "cv", *args)  # resumed: nothing retrained
    assert [c.stat().st_mtime_ns for c in checkpoints] == times
    assert again["targets"] == summary["targets"]
    member = EmulatorModule.load_from_checkpoint(checkpoints[0]).eval()  # two equal members: the member
    rows = Bank(bank).load()
    u = BankDataModule(_tiny_space(tiny_splits), rows=rows, n_bins=10_000).encode(rows)["x"]
    mean, alone = mean_prediction([member, member], u), member.predict_stats(u)
    assert torch.equal(mean.fcd_levels, alone.fcd_levels) and torch.equal(mean.n_valid_fc, alone.n_valid_fc)
    assert torch.allclose(mean.fc_z.float(), alone.fc_z.float(), atol=1e-6)


def test_linearised_bold_fc_ranks_features_and_its_balloon_transfer_is_the_steady_state_slope(
    tiny_folder, tmp_path
):
    from pmfm.physics.balloon import ALPHA, GAMMA_H, K1, K2, K3, RHO
    from pmfm.studies.linearised_bold_fc import balloon_transfer

    # at zero frequency the linearised Balloon's transfer is d(steady-state BOLD)/dS
    def steady_bold(s):
        f = 1 + s / GAMMA_H
        v = f**ALPHA
        q = f * (1 - (1 - RHO) ** (1 / f)) / (RHO * v ** (1 / ALPHA - 1))
        return K1 * (1 - q) + K2 * (1 - q / v) + K3 * (1 - v)

    s = torch.tensor([[0.05, 0.2, 0.6]], dtype=torch.float64)
    h = 1e-6
    slope = (steady_bold(s + h) - steady_bold(s - h)) / (2 * h)
    transfer = balloon_transfer(s, torch.zeros(1, dtype=torch.float64))[..., 0]
    np.testing.assert_allclose(transfer.real, slope, rtol=1e-6)
    assert torch.all(transfer.imag.abs() < 1e-12)

    dataset = write_synthetic_dataset(tmp_path / "ds", _tiny_space(tiny_folder), n_runs=2, per_run=20)
    with initialize_config_module("pmfm.conf", version_base="1.3"):
        cfg = _compose("linearised_bold_fc", *tiny_overrides(tiny_folder), f"study.dataset={dataset}",
                       "study.chunk=16")  # fmt: skip
        summary = run_study(cfg, tmp_path / "out")
    assert summary["samples"] == 40 and summary["best10"] == 4
    assert {"bold_fc_match", "fc_match", "slow_fc_match", "fc_mean"} <= set(summary["spearman"])
    for rho in summary["spearman"].values():
        assert all(-1 <= v <= 1 for v in rho.values())
    assert json.loads((tmp_path / "out" / "linearised_bold_fc.json").read_text())["samples"] == 40


def test_parameter_recovery_targets_carry_the_truth_speedup_times_its_fits_and_acceptance_rescores_them(
    tiny_folder, tmp_path
):
    common = _values("study.fits.common", validation__repeats=4, validation__top_k=3, strategy__repeats=2,
                     trainer__accelerator="cpu")  # fmt: skip
    simulator = _values("study.fits.simulator", strategy__n_starts=2, strategy__cmaes__popsize=6,
                        strategy__cmaes__mu=2, strategy__cmaes__max_generations=3)  # fmt: skip
    surrogate = _values("study.fits.surrogate", dataset__name="tiny", dataset__cmaes__n_starts=2,
                        dataset__cmaes__popsize=8, dataset__cmaes__max_generations=2, trainer__max_epochs=3,
                        search__n_starts=3, strategy__top_k=3, search__popsize=10, search__mu=3,
                        search__max_generations=5)  # fmt: skip
    recovery = tmp_path / "recovery"
    summary, table = _run(
        "parameter_recovery", tiny_folder, recovery, "study.truth=random", "study.truth_index=3",
        "study.target_repeats=4", "study.vali_repeats=4", "study.noise_groups=3",
        *common, *simulator, *surrogate,
    )  # fmt: skip
    assert set(table[0]) >= {"strategy", "coefficient", "truth", "recovered", "abs_error_normalised",
                             "spread_normalised"}  # fmt: skip
    assert sorted({r["strategy"] for r in table}) == ["simulator", "surrogate"]
    assert len(table) == 2 * 10
    truth = np.array([float(r["truth"]) for r in table if r["strategy"] == "simulator"])
    np.testing.assert_allclose(truth, summary["truth"], rtol=1e-5)  # the table keeps 6 digits
    assert {"no_worse_within_noise", "fresh_mean", "minus_truth"} <= set(summary["strategies"]["simulator"])
    # the fits ran with the study's values: the surrogate's own dataset in the run folder
    assert (recovery / "datasets" / "tiny_pmfm_100tr_r3" / "manifest.json").is_file()
    # the invariant: the targets carry the truth (its own cost is clearly below a random set's); whether a
    # fit reaches the truth's cost needs more than this size's budget: the CPU-scale run reports it
    se = np.hypot(summary["truth_fresh_se"], summary["random_fresh_se"])
    assert summary["truth_fresh_mean"] < summary["random_fresh_mean"] - 2 * se

    summary, table = _run(
        "speedup", tiny_folder, tmp_path / "speedup", "study.batch=2", "study.steps=20",
        "study.cost_batch=2", "study.surrogates=[mlp]", "study.surrogate_batch=256",
        f"study.fits_from={recovery}",
    )  # fmt: skip
    assert set(table[0]) >= {"source", "what", "device", "per_s", "seconds_per_candidate"}
    assert any("not available on this device" in r["what"] for r in table)
    whole = summary["whole_fit"]
    assert whole["simulator"]["wall_s"] > 0 and whole["surrogate"]["wall_s"] > 0
    # the invariant: one surrogate pass is cheaper than R simulations plus their costs
    here = [r for r in table if r["source"] == "measured here" and r["per_s"] != "nan"]
    measured = {r["what"].split()[0]: float(r["seconds_per_candidate"]) for r in here}  # fmt: skip
    assert measured["surrogate"] < measured["sim"]
    reach = whole["simulator"]["wall_s_to_surrogate_quality"]
    assert reach is None or reach <= whole["simulator"]["wall_s"] + 1e-9

    # fit_acceptance: both fits' chosen sets re-simulated on the targets' validation split
    targets = ["data=folder", f"data.path={recovery / 'targets'}", "data.split=train", "protocol=tiny",
               "device=cpu"]  # fmt: skip
    runs = [f"study.simulator_run={recovery / 'fit_simulator'}",
            f"study.surrogate_runs=[{recovery / 'fit_surrogate'}]"]  # fmt: skip
    with initialize_config_module("pmfm.conf", version_base="1.3"):
        cfg = _compose("fit_acceptance", *targets, *runs, "study.repeats=2", "study.groups=3",
                       f"study.out={tmp_path / 'copy.json'}")  # fmt: skip
        report = run_study(cfg, tmp_path / "acceptance")
    sim, sur = report["simulator"], report["surrogate_1"]
    fits = {
        k: json.loads((recovery / f"fit_{k}" / "summary.json").read_text())["total"]
        for k in ("simulator", "surrogate")
    }
    assert sim["total_simulations"] == fits["simulator"]["simulations"]
    assert sur["total_simulations"] == fits["surrogate"]["simulations"]
    assert sur["pass_simulations"] == (sur["total_simulations"] < sim["total_simulations"])
    assert len(sim["group_totals"]) == 3 and sim["mean"] == pytest.approx(np.nanmean(sim["group_totals"]))
    assert sur["difference"] == pytest.approx(sur["mean"] - sim["mean"])
    assert sur["pass_quality"] == (sur["mean"] <= sim["mean"] + 2 * np.hypot(sim["se"], sur["se"]))
    saved = json.loads((tmp_path / "acceptance" / "fit_acceptance.json").read_text())
    assert saved == json.loads((tmp_path / "copy.json").read_text())
    assert saved["simulator"]["theta"] == pytest.approx(sim["theta"])


@pytest.mark.slow  # a fresh interpreter importing the stack: ~8 s of the default run's budget
def test_the_entry_point_reports_a_missing_setting_as_a_user_error(tmp_path):
    """``python -m pmfm.experiment``: a study that lacks a required setting says which, exit status 2."""
    done = subprocess.run(
        [sys.executable, "-m", "pmfm.experiment", "study=fit_acceptance", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "error: study=fit_acceptance needs study.simulator_run" in done.stderr
