"""python -m pmfm.experiment: every study at its smallest size (tiny 8-region data, 100 TRs), its
table's columns and one invariant each (issue 7)."""

import json

import numpy as np
from conftest import tiny_overrides
from hydra import compose, initialize

from pmfm.studies.report import read_table


def _run(study: str, folder, out_dir, *extra):
    from pmfm.experiment import run

    with initialize(config_path="../conf", version_base="1.3"):
        cfg = compose(
            "experiment", overrides=[f"experiment={study}", *tiny_overrides(folder), "plot=false", *extra]
        )
        summary = run(cfg, out_dir)
    table = read_table(out_dir / "results.csv")
    assert json.loads((out_dir / "summary.json").read_text())["conclusion"]
    assert (out_dir / "summary.md").is_file()
    return summary, table


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
