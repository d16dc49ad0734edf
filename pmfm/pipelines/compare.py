"""``python -m pmfm.compare <multirun folder>``: compare the runs of a sweep without a web page.

Reads each run's metrics.json (written by pmfm.train; else the CSV logger's metrics.csv or the
offline wandb summary) and its Hydra overrides, prints a table sorted by the chosen metric, writes
comparison.csv and comparison.png into the folder, and groups runs that differ only by seed to
report mean +- sd.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from pmfm.plots import plt

METRICS = ("test/spearman", "test/spearman_top10", "test/top5_recall", "test/mae_fc_cost", "test/mae_ks",
           "val/spearman")  # fmt:skip


def run_metrics(run: Path) -> dict[str, float] | None:
    """The final metrics of one run folder, from whichever record it has."""
    if (run / "metrics.json").is_file():
        return json.loads((run / "metrics.json").read_text())
    for path in sorted(run.glob("csv/version_*/metrics.csv")):
        last: dict[str, float] = {}
        with path.open() as f:
            for row in csv.DictReader(f):
                last.update({k: float(v) for k, v in row.items() if v not in ("", None)})
        return last
    for path in sorted(run.glob("wandb/offline-run-*/files/wandb-summary.json")):
        return {k: v for k, v in json.loads(path.read_text()).items() if isinstance(v, int | float)}
    return None


def run_label(run: Path) -> tuple[str, str]:
    """(label without the seed, seed) from the run's Hydra overrides."""
    path = run / ".hydra" / "overrides.yaml"
    overrides = (
        [ln.strip()[2:] for ln in path.read_text().splitlines() if ln.strip().startswith("- ")]
        if path.is_file()
        else []
    )
    seed = next((o.split("=", 1)[1] for o in overrides if o.startswith("seed=")), "-")
    label = " ".join(o for o in overrides if not o.startswith("seed=")) or run.name
    return label, seed


def compare(folder: str | Path, metric: str = "test/spearman") -> list[dict]:
    """One row per run: label, seed and the METRICS; writes comparison.csv and comparison.png."""
    folder = Path(folder)
    rows = []
    for run in sorted(p for p in folder.iterdir() if p.is_dir()):
        metrics = run_metrics(run)
        if metrics is None:
            continue
        label, seed = run_label(run)
        rows.append(
            {
                "run": run.name,
                "label": label,
                "seed": seed,
                **{m: metrics.get(m, float("nan")) for m in METRICS},
            }
        )
    if not rows:
        raise FileNotFoundError(f"{folder}: no run with metrics (metrics.json, csv or wandb summary) found")
    rows.sort(key=lambda r: _descending(r[metric]))
    with (folder / "comparison.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["run", "label", "seed", *METRICS])
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, metric, folder / "comparison.png")
    return rows


def _descending(value) -> float:
    """Sort key: larger first, NaN last."""
    return -value if math.isfinite(value) else math.inf


def summary_table(rows: list[dict], metric: str) -> str:
    """Per-run rows, then mean +- sd over seeds per label."""
    short = [m.split("/")[1] for m in METRICS]
    lines = [f"{'run':<6} {'label':<40} {'seed':>4} " + " ".join(f"{s:>15}" for s in short)]
    for r in rows:
        lines.append(
            f"{r['run']:<6} {r['label'][:40]:<40} {r['seed']:>4} "
            + " ".join(f"{r[m]:15.4f}" for m in METRICS)
        )
    groups = defaultdict(list)
    for r in rows:
        groups[r["label"]].append(r[metric])
    lines.append(f"\n{metric} by configuration (mean +- sd over seeds):")
    for label, values in sorted(groups.items(), key=lambda kv: -np.nanmean(kv[1])):
        sd = np.nanstd(values, ddof=1) if len(values) > 1 else float("nan")
        lines.append(f"  {label:<40} {np.nanmean(values):.4f} +- {sd:.4f}  (n = {len(values)})")
    return "\n".join(lines)


def plot(rows: list[dict], metric: str, path: Path) -> None:

    groups = defaultdict(list)
    for r in rows:
        groups[r["label"]].append(r[metric])
    labels = sorted(groups, key=lambda k: -np.nanmean(groups[k]))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(labels)), 4))
    for i, label in enumerate(labels):
        ax.scatter([i] * len(groups[label]), groups[label], color="C0")
        ax.errorbar(i, np.nanmean(groups[label]), yerr=np.nanstd(groups[label]), color="k", capsize=4)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m pmfm.compare", description=__doc__.split("\n")[0])
    p.add_argument("folder", help="a Hydra multirun folder (multirun/train/<date>)")
    p.add_argument("--metric", default="test/spearman", choices=METRICS)
    a = p.parse_args(argv)
    rows = compare(a.folder, a.metric)
    print(summary_table(rows, a.metric))
    print(f"\nwritten: {Path(a.folder) / 'comparison.csv'}, {Path(a.folder) / 'comparison.png'}")
    return rows


if __name__ == "__main__":
    main()
