"""What a fit leaves in its run folder: results.csv, maps, summary table and figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pmfm.cost import RepeatStats
from pmfm.pipelines.fit.stages import Candidates
from pmfm.pipelines.results import FitResults, write_maps, write_results
from pmfm.plots import plot_cost_per_generation, plot_fc_fcd, plot_maps

SUMMARY_COLUMNS = ("stage", "wall_s", "simulations", "surrogate_evaluations", "note")
SKIPPED_TEST = """
############################################################################################
#  TEST STAGE SKIPPED: no test split was named (test.path=null).                           #
#  The costs reported are training and validation costs only; validation is never reused  #
#  as test. Name a folder with sc_test.csv, fc_test.csv, fcd_test.mat: test.path=<folder>  #
############################################################################################
"""


def fit_results(candidates: Candidates, validation: dict, test: np.ndarray | None) -> FitResults:
    """The chosen sets (best first) with their training, validation and test costs."""
    chosen = validation["chosen"]
    k = len(chosen)
    return FitResults(
        theta=candidates.theta[chosen].clone(),
        start=np.asarray(candidates.start)[chosen],
        generation=np.asarray(candidates.generation)[chosen],
        costs={
            "train": np.asarray(candidates.train)[chosen],
            "vali": np.asarray(validation["vali"])[chosen],
            "test": np.full((k, 3), np.nan) if test is None else np.asarray(test),
        },
    )


def write_outputs(
    out_dir: Path,
    results: FitResults,
    candidates: Candidates,
    validation: dict,
    space,
    vali_data,
    variant,
    plot: bool = True,
) -> list[Path]:
    """results.csv, maps.csv (+ maps.png), best_fc_fcd.png, cost_per_generation.png."""
    paths = [write_results(out_dir / "results.csv", results, space)]
    paths.append(write_maps(out_dir / "maps.csv", results.theta, space, vali_data.region_names))
    if not plot:
        return paths
    best = space.regional(results.theta[:1])
    paths.append(
        plot_maps(
            best.w[0].numpy(),
            best.I[0].numpy(),
            best.sigma[0].numpy(),
            float(best.G[0]),
            vali_data.region_names,
            out_dir / "maps.png",
        )
    )
    stats = RepeatStats(
        validation["best_fc"],
        validation["best_cdf"],
        validation["best_fc_valid"],
        validation["best_fcd_valid"],
    )
    repeats = len(validation["best_fc"])
    plot_fc_fcd(stats, vali_data, repeats, variant, out_dir / "best_fc_fcd.png", max_sets=1)
    paths.append(out_dir / "best_fc_fcd.png")
    paths.append(
        plot_cost_per_generation(
            candidates.per_generation, out_dir / "cost_per_generation.png", candidates.per_generation_label
        )
    )
    return paths


def summary_table(
    summary: dict, device: str, compare_to: str | Path | None, chosen: dict | None = None
) -> tuple[list[list], list[str]]:
    """Rows (stage, wall_s, simulations, surrogate_evaluations, note) with a total, and footnotes.

    ``chosen`` ("vali" totals, "vali_valid" counts and "repeats" R of this run's chosen sets) is
    set beside the compared run's, when that run recorded them.
    """
    rows = [
        [stage, e["wall_s"], e["simulations"], e["surrogate_evaluations"], e["note"]]
        for stage, e in summary.items()
    ]
    total_wall = sum(r[1] for r in rows)
    total_sims = sum(r[2] for r in rows)
    rows.append(["total", total_wall, total_sims, sum(r[3] for r in rows), ""])
    notes = [f"device: {device}"]
    if compare_to:
        other_path = Path(compare_to) / "summary.json"
        if not other_path.is_file():
            notes.append(f"speedup: not measured ({other_path} not found)")
        else:
            other = json.loads(other_path.read_text())
            o_wall, o_sims = other["total"]["wall_s"], other["total"]["simulations"]
            where = f"{other.get('strategy', '?')} strategy on {other.get('device', '?')}"
            notes.append(
                f"measured against {compare_to} ({where}): wall-time speedup "
                f"{o_wall / max(total_wall, 1e-9):.2f}x ({o_wall:.1f} s vs {total_wall:.1f} s); "
                f"simulations {o_sims} there vs {total_sims} here (ratio {o_sims / max(total_sims, 1):.2f})"
            )
            reused = [r[0] for r in rows if "reused" in str(r[4])]
            if reused:
                notes.append(
                    f"  (this run's wall time leaves out reused inputs: {', '.join(reused)}; see the notes)"
                )
            if other.get("device") != device:
                notes.append("  (different devices: the ratio mixes hardware, not only method)")
            theirs = other.get("chosen")
            if chosen is not None and theirs is not None:
                notes.append(
                    f"chosen sets' validation totals here (R = {chosen['repeats']}): "
                    f"{_totals(chosen)}; there (R = {theirs['repeats']}): {_totals(theirs)}"
                )
    else:
        notes.append(
            "speedup: not measured (pass compare_to=<run folder of a strategy=simulator fit>, same device)"
        )
    return rows, notes


def _totals(chosen: dict) -> str:
    """'best 1.99, 2.03, ... (valid repeats 2/2, ...)' of a run's chosen sets."""
    totals = ", ".join(f"{t:.4f}" for t in chosen["vali"])
    valid = ", ".join(f"{int(v)}/{chosen['repeats']}" for v in chosen["vali_valid"])
    return f"{totals} (valid repeats {valid})"


def write_summary(
    out_dir: Path, rows: list[list], notes: list[str], strategy: str, device: str, chosen: dict | None = None
) -> str:
    """summary.csv, summary.json (read by compare_to=; with the chosen sets' validation totals and
    valid repeats when given) and the printed text."""
    lines = [",".join(SUMMARY_COLUMNS)] + [f'{r[0]},{r[1]:.3f},{r[2]},{r[3]},"{r[4]}"' for r in rows]
    (out_dir / "summary.csv").write_text("\n".join(lines) + "\n")
    as_json: dict = {r[0]: dict(zip(SUMMARY_COLUMNS[1:], r[1:], strict=True)) for r in rows}
    as_json |= {"strategy": strategy, "device": device}
    if chosen is not None:
        as_json["chosen"] = chosen
    (out_dir / "summary.json").write_text(json.dumps(as_json, indent=1) + "\n")
    text = [f"{'stage':<18}{'wall (s)':>10}{'simulations':>13}{'surrogate evals':>17}  note"]
    text += [f"{r[0]:<18}{r[1]:>10.1f}{r[2]:>13}{r[3]:>17}  {r[4]}" for r in rows]
    return "\n".join(text + notes)


def chosen_validity(candidates: Candidates, validation: dict) -> dict[str, np.ndarray]:
    """The chosen sets' re-simulated validity: valid repeats on the training split ("train_valid")
    and in validation ("vali_valid"), and for the FIC model each one's lowest and highest regional
    mean excitatory rate in validation ("rate_min", "rate_max", Hz)."""
    chosen = np.asarray(validation["chosen"])
    k = len(chosen)
    train_valid = candidates.train_valid
    out = {
        "train_valid": np.full(k, -1) if train_valid is None else np.asarray(train_valid)[chosen],
        "vali_valid": np.asarray(validation.get("vali_valid", np.full(len(candidates.theta), -1)))[chosen],
    }
    if "vali_rate" in validation:
        rates = np.asarray(validation["vali_rate"])[chosen]  # (k, N)
        out |= {"rate_min": rates.min(1), "rate_max": rates.max(1)}
    return out


def write_validity(out_dir: Path, validity: dict[str, np.ndarray], train_r: int, vali_r: int) -> Path:
    """validity.csv: one row per chosen set (best first), its valid repeats (and FIC rates)."""
    names = list(validity)
    table = np.column_stack([np.arange(1, len(validity["vali_valid"]) + 1), *validity.values()])
    path = out_dir / "validity.csv"
    header = f"# train R = {train_r}, validation R = {vali_r}; -1: not recorded\nrank," + ",".join(names)
    np.savetxt(path, table, delimiter=",", header=header, comments="", fmt="%.6g")
    return path


def results_text(
    results: FitResults, train_r: int, vali_r: int, test_r: int | None, validity: dict | None = None
) -> str:
    """The chosen sets' costs, best first, with their re-simulated validity when given."""
    head = f"chosen sets (lower is better): train R = {train_r}, validation R = {vali_r}, "
    head += "test skipped" if test_r is None else f"test mean over groups of {test_r}"
    extra = "" if validity is None else f" {'valid(train)':>12} {'valid(vali)':>11}"
    rates = validity is not None and "rate_min" in validity
    extra += "  rates (Hz)" if rates else ""
    lines = [
        head,
        f"{'rank':>4} {'start':>5} {'gen':>4} {'train':>8} {'vali':>8} {'test':>8}  {'G':>6}{extra}",
    ]
    g = results.theta[:, 6]
    for i in range(len(results.theta)):
        costs = [results.costs[stage][i, 2] for stage in ("train", "vali", "test")]
        line = (
            f"{i + 1:>4} {results.start[i]:>5} {results.generation[i]:>4} "
            f"{costs[0]:8.4f} {costs[1]:8.4f} {costs[2]:8.4f}  {float(g[i]):6.3f}"
        )
        if validity is not None:
            train_ok, vali_ok = int(validity["train_valid"][i]), int(validity["vali_valid"][i])
            line += f" {train_ok:>7}/{train_r:<4} {vali_ok:>6}/{vali_r:<4}"
        if rates:
            line += f"  {validity['rate_min'][i]:.3f}-{validity['rate_max'][i]:.3f}"  # type: ignore[index]
        lines.append(line)
    return "\n".join(lines)
