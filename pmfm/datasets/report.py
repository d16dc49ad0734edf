"""The summary printed after generation, and its histogram figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pmfm.datasets.store import ShardStore, load_dataset
from pmfm.plots import plt


def summarise(store: ShardStore, manifest: dict, progress, out_dir: Path) -> str:
    """Counts, valid fraction, cost quantiles, speed; writes cost_histogram.png to ``out_dir``."""
    counts = manifest["counts"]
    lines = [
        f"dataset {store.folder} ({manifest['config']['dataset']['strategy']}, "
        f"R = {manifest['config']['dataset']['repeats']})",
        f"  shards: {counts['shards_complete']}/{counts['shards_total']} complete"
        f" (this run wrote {progress.written_shards or 'none'}, skipped {progress.skipped_shards or 'none'})",
        f"  rows: {counts['rows']}",
    ]
    if progress.acceptance:
        lines.append(f"  feasible acceptance rate: {np.nanmean(progress.acceptance):.3g}")
    if progress.seconds > 0:
        lines.append(
            f"  this run: {progress.simulations} simulations in {progress.seconds:.1f} s"
            f" = {progress.simulations / progress.seconds:.2f} simulations/s (simulate + cost)"
        )
    if counts["rows"]:
        rows = load_dataset(store.folder)
        valid = (rows["n_valid_fc"] > 0) & (rows["n_valid_fcd"] > 0)
        total = rows["total"][valid]
        lines.append(f"  valid (both terms have a valid repeat): {valid.mean():.3f}")
        if len(total):
            q = np.quantile(total, [0, 0.1, 0.5, 0.9, 1])
            lines.append("  total cost quantiles (0, 10, 50, 90, 100%): " + ", ".join(f"{v:.3f}" for v in q))
            plot_histogram(rows, valid, out_dir / "cost_histogram.png")
            lines.append(f"  figure: {out_dir / 'cost_histogram.png'}")
    return "\n".join(lines)


def plot_histogram(rows: dict, valid: np.ndarray, path: Path) -> None:

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key in zip(axes, ("total", "fc_cost", "ks"), strict=True):
        ax.hist(rows[key][valid], bins=40, color="C0")
        ax.set_xlabel(key)
        ax.set_ylabel("samples")
    axes[0].set_title(f"{int(valid.sum())} valid samples, R = {int(rows['repeats'][0])}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
