"""The benchmark entry on a tiny truncated run: table rows, extrapolation, the results CSV."""

import csv
import math

import pytest

from pmfm.pipelines.benchmark import COLUMNS, FULL, main, run_benchmark

TINY = [
    "--steps",
    "200",
    "--batch",
    "2",
    "--cost-batch",
    "2",
    "--cost-tr",
    "100",
    "--repeats",
    "1",
    "--surrogates",
    "",
    "--evaluate-repeats",
    "0",
]


def _read(path):
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_rows_extrapolate_and_csv_appends(tmp_path, capsys):
    results = tmp_path / "bench" / "results.csv"  # the folder does not exist yet
    rows = run_benchmark(
        batches=[2], steps=200, repeats=1, cost_batch=2, cost_tr=100, results_file=results,
        surrogates=["mlp"], surrogate_batch=1000,
    )  # fmt: skip
    sim, cost, surrogate = rows
    assert surrogate["implementation"].startswith("surrogate mlp") and surrogate["batch"] == 1000
    assert FULL.total_steps == 99_401
    assert sim["steps"] == 200 and sim["batch"] == 2 and sim["device_type"] == "cpu"
    assert "extrapolated from 200 steps" in sim["implementation"]
    assert sim["implementation"].startswith("sim euler fixed_order float32")
    assert math.isclose(sim["full_s"], sim["seconds"] * 99_401 / 200)
    assert math.isclose(sim["sims_per_s"], 2 / sim["full_s"])
    assert cost["implementation"] == "cost repeat_stats float32 float32 products T=100" and cost["batch"] == 2
    for row in rows:
        assert math.isfinite(row["sims_per_s"]) and row["sims_per_s"] > 0

    table = _read(results)
    assert tuple(table[0]) == COLUMNS == (
        "date", "device", "torch", "implementation", "batch", "sims_per_s"
    )  # fmt: skip
    assert len(table) == 4 and all(len(r) == 6 for r in table)
    for r, row in zip(table[1:], rows, strict=True):
        assert r[3] == row["implementation"] and int(r[4]) == row["batch"]
        assert math.isfinite(float(r[5])) and float(r[5]) > 0
        assert "cores" in r[1] and r[2]

    out = main([*TINY, "--cost-batch", "0", "--results-file", str(results)])
    assert len(out) == 1  # the cost skipped
    printed = capsys.readouterr().out
    assert "sims/s" in printed and "extrapolated" in printed and "99,401" in printed
    table = _read(results)
    assert len(table) == 5 and table[0] == list(COLUMNS)  # appended, header written once


def test_skipping_the_results_file_and_bad_steps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main([*TINY, "--cost-batch", "0", "--results-file", ""])
    assert not (tmp_path / "benchmarks").exists()
    with pytest.raises(ValueError, match="at least 2"):
        run_benchmark(steps=1, cost_batch=0, results_file=None, surrogates=())


def test_the_evaluation_path_is_timed_end_to_end(tmp_path):
    rows = run_benchmark(
        batches=[2], steps=200, repeats=1, cost_batch=0, results_file=None, surrogates=(), evaluate_repeats=2
    )
    sim, evaluate = rows
    assert (
        evaluate["implementation"]
        == "evaluate sim euler + cost, R = 2, float32 (extrapolated from 6048 steps)"
    )
    assert evaluate["batch"] == 2 and math.isclose(evaluate["sims_per_s"], 2 * 2 / evaluate["full_s"])
    assert evaluate["steps"] == 84 * 72  # a truncated run long enough for one FCD window of 83 TRs
    assert math.isclose(evaluate["full_s"], evaluate["seconds"] * 99_401 / (84 * 72))
