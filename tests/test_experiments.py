"""python -m pmfm.experiment: every study at its smallest size (tiny 8-region data, 100 TRs), its
table's columns and one invariant each (issue 7)."""

import json

import numpy as np
from conftest import tiny_overrides
from hydra import compose, initialize_config_module

from pmfm.studies.report import read_table


def _run(study: str, folder, out_dir, *extra):
    from pmfm.experiment import run

    with initialize_config_module("pmfm.conf", version_base="1.3"):
        cfg = compose(
            "experiment", overrides=[f"experiment={study}", *tiny_overrides(folder), "plot=false", *extra]
        )
        summary = run(cfg, out_dir)
    table = read_table(out_dir / "results.csv")
    assert json.loads((out_dir / "summary.json").read_text())["conclusion"]
    assert (out_dir / "summary.md").is_file()
    return summary, table


def _listed(key: str, overrides: list[str]) -> str:
    """A Hydra override setting ``key`` to a list of override strings (each quoted)."""
    return f"{key}=[" + ",".join(f"'{o}'" for o in overrides) + "]"


def test_sc_insensitivity_identical_sc_differs_by_nothing_and_less_than_the_repeat_spread(
    tiny_folder, tmp_path
):
    summary, table = _run(
        "sc_insensitivity", tiny_folder, tmp_path,
        "study.sets=random", "study.n_sets=4", "study.other_split=null", "study.noise_log_sd=0.3",
        "study.source_n_tr=100",
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
        "study.source_n_tr=100",
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
    from conftest import write_synthetic_dataset

    from pmfm.data import load_bundled
    from pmfm.params import ParamSpace

    dataset = write_synthetic_dataset(
        tmp_path / "ds", ParamSpace(load_bundled().basis()), n_runs=8, per_run=20
    )
    train = [f"dataset.folder={dataset}", "logger=csv", "trainer.max_epochs=1", "batch_size=64",
             "trainer.accelerator=cpu", "device=cpu", "search_callback.enabled=false"]  # fmt: skip
    with initialize_config_module("pmfm.conf", version_base="1.3"):
        cfg = compose(
            "experiment",
            overrides=[
                "experiment=model_comparison",
                "plot=false",
                "device=cpu",
                "study.models=[mlp,ensemble]",
                "study.seeds=[1,2]",
                "study.eval_batch=256",
                _listed("study.train_overrides", train),
            ],
        )
        from pmfm.experiment import run

        summary = run(cfg, tmp_path / "out")
    table = read_table(tmp_path / "out" / "results.csv")
    assert set(table[0]) >= {"model", "seed", "test/spearman", "test/spearman_top10", "test/top5_recall",
                             "test/mae_fc_cost", "evals_per_s"}  # fmt: skip
    assert sorted((r["model"], r["seed"]) for r in table) == [("ensemble", "1"), ("ensemble", "2"),
                                                              ("mlp", "1"), ("mlp", "2")]  # fmt: skip
    assert all(float(r["evals_per_s"]) > 0 for r in table)
    # the invariant: the seeds were applied (runs of one model differ) and the named winner has the best mean
    for model in ("mlp", "ensemble"):
        assert len({r["test/spearman"] for r in table if r["model"] == model}) == 2
    means = {e["model"]: e["test/spearman mean"] for e in summary["per_model"]}
    assert summary["winner"] == max(means, key=means.get)
    print(means)


def test_search_comparison_penalty_keeps_the_search_where_the_ensemble_agrees(tiny_folder, tmp_path):
    from conftest import write_synthetic_dataset

    from pmfm.data import load_folder
    from pmfm.params import ParamSpace

    space = ParamSpace(load_folder(tiny_folder, "test", n_tr=100).basis())
    dataset = write_synthetic_dataset(tmp_path / "ds", space, n_runs=8, per_run=20)
    train = [f"dataset.folder={dataset}", "model=ensemble", "model.network_hparams.k=3", "logger=csv",
             "trainer.max_epochs=3", "trainer.accelerator=cpu", "search_callback.enabled=false"]  # fmt: skip
    small = [f"study.arms.{arm}.{k}={v}" for arm in ("cmaes", "cmaes_penalised")
             for k, v in (("popsize", 12), ("mu", 3), ("max_generations", 6))]  # fmt: skip
    summary, table = _run(
        "search_comparison", tiny_folder, tmp_path / "out", "study.n_starts=3", "study.top_k=2",
        _listed("study.train_overrides", train),
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


def test_parameter_recovery_targets_carry_the_truth_and_speedup_times_its_fits(tiny_folder, tmp_path):
    fits = ["validation.top_k=3", "strategy.repeats=2", "trainer.max_epochs=3", "trainer.accelerator=cpu"]
    simulator = ["strategy.n_starts=2", "strategy.cmaes.popsize=6", "strategy.cmaes.mu=2",
                 "strategy.cmaes.max_generations=3"]  # fmt: skip
    surrogate = ["dataset=cmaes", "dataset.name=tiny", "dataset.num_shards=1", "dataset.cmaes.n_starts=2",
                 "dataset.cmaes.popsize=8", "dataset.cmaes.max_generations=2", "strategy.n_starts=3",
                 "strategy.top_k=3", "search.popsize=10", "search.mu=3",
                 "search.max_generations=5"]  # fmt: skip
    summary, table = _run(
        "parameter_recovery", tiny_folder, tmp_path / "recovery", "study.truth=random",
        "study.truth_index=3", "study.source_n_tr=100", "study.target_repeats=4", "study.vali_repeats=4",
        "study.noise_groups=3", _listed("study.fit_overrides.common", ["validation.repeats=4", *fits]),
        _listed("study.fit_overrides.simulator", simulator),
        _listed("study.fit_overrides.surrogate", surrogate),
    )  # fmt: skip
    assert set(table[0]) >= {"strategy", "coefficient", "truth", "recovered", "abs_error_normalised",
                             "spread_normalised"}  # fmt: skip
    assert sorted({r["strategy"] for r in table}) == ["simulator", "surrogate"]
    assert len(table) == 2 * 10
    truth = np.array([float(r["truth"]) for r in table if r["strategy"] == "simulator"])
    np.testing.assert_allclose(truth, summary["truth"], rtol=1e-5)  # the table keeps 6 digits
    assert {"no_worse_within_noise", "fresh_mean", "minus_truth"} <= set(summary["strategies"]["simulator"])
    # the invariant: the targets carry the truth (its own cost is clearly below a random set's); whether a
    # fit reaches the truth's cost needs more than this size's budget: the CPU-scale run reports it
    se = np.hypot(summary["truth_fresh_se"], summary["random_fresh_se"])
    assert summary["truth_fresh_mean"] < summary["random_fresh_mean"] - 2 * se

    summary, table = _run(
        "speedup", tiny_folder, tmp_path / "speedup", "device=cpu", "study.batch=2", "study.steps=20",
        "study.cost_batch=2", "study.surrogates=[mlp]", "study.surrogate_batch=256",
        f"study.fits_from={tmp_path / 'recovery'}",
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
