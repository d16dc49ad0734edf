"""Figures people would rather look at than read: simulated vs empirical FC and FCD, maps, search
and training curves. Importing it selects matplotlib's file backend (no screen needed); other modules
draw with its ``plt``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pmfm.cost import RepeatStats  # noqa: E402
from pmfm.data import EmpiricalData  # noqa: E402


def _square(upper: np.ndarray, n: int) -> np.ndarray:
    """(E,) strict upper triangle -> (N, N) symmetric matrix with unit diagonal."""
    mat = np.eye(n)
    rows, cols = np.triu_indices(n, 1)
    mat[rows, cols] = mat[cols, rows] = upper
    return mat


def plot_fc_fcd(
    stats: RepeatStats, data: EmpiricalData, repeats: int, variant, path: Path, max_sets: int = 4
):
    """For the first ``max_sets`` sets: mean simulated FC beside the empirical FC, and FCD CDFs."""
    n = data.n_regions
    n_sets = min(max_sets, len(stats.fc) // repeats)
    fig, axes = plt.subplots(n_sets, 3, figsize=(12, 3.6 * n_sets), squeeze=False)
    grid = np.linspace(variant.hist_min, variant.hist_max, variant.n_bins + 1)[1:]
    emp_cdf = data.fcd_cdf / data.fcd_cdf[-1]
    for i in range(n_sets):
        rows = slice(i * repeats, (i + 1) * repeats)
        fc_ok = stats.fc_valid[rows].numpy()
        fcd_ok = stats.fcd_valid[rows].numpy()
        ax_sim, ax_emp, ax_cdf = axes[i]
        if fc_ok.any():
            sim_fc = _square(stats.fc[rows].numpy()[fc_ok].mean(0), n)
            ax_sim.imshow(sim_fc, vmin=-1, vmax=1, cmap="RdBu_r")
            r = np.corrcoef(sim_fc[np.triu_indices(n, 1)], data.fc[np.triu_indices(n, 1)])[0, 1]
            ax_sim.set_title(f"set {i + 1}: simulated FC (r = {r:.3f})")
        else:
            ax_sim.set_title(f"set {i + 1}: no valid repeat")
        im = ax_emp.imshow(data.fc, vmin=-1, vmax=1, cmap="RdBu_r")
        ax_emp.set_title(f"empirical FC ({data.name}/{data.split})")
        fig.colorbar(im, ax=ax_emp, fraction=0.046)
        ax_cdf.plot(grid, emp_cdf, color="k", label="empirical")
        if fcd_ok.any():
            cdfs = stats.cdf[rows].numpy()[fcd_ok]
            for cdf in cdfs:
                ax_cdf.plot(grid, cdf / cdf[-1], color="C1", alpha=0.35, lw=0.8)
            ax_cdf.plot(
                grid,
                cdfs.mean(0) / cdfs[0, -1],
                color="C1",
                label=f"simulated (mean of {len(cdfs)})",
            )
        ax_cdf.set_xlabel("FCD value")
        ax_cdf.set_ylabel("cumulative fraction")
        ax_cdf.set_title("FCD CDF")
        ax_cdf.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pred_vs_sim(pred: dict, true: dict, valid, path: Path, title: str = "") -> Path:
    """Predicted vs simulated total cost (valid samples) and validity, with the metrics in the title."""
    valid = np.asarray(valid, dtype=bool)
    p_total, t_total = np.asarray(pred["total"])[valid], np.asarray(true["total"])[valid]
    fig, ax = plt.subplots(figsize=(5.2, 5))
    ax.scatter(t_total, p_total, s=6, alpha=0.5)
    if len(t_total):
        lo, hi = float(min(t_total.min(), p_total.min())), float(max(t_total.max(), p_total.max()))
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
    ax.set_xlabel("simulated total cost")
    ax.set_ylabel("predicted total cost")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_search(history: np.ndarray, predicted, simulated, path: Path, title: str = "") -> Path:
    """Convergence of a surrogate search (best score per start and step) beside its candidates'
    predicted vs re-simulated total cost."""
    history = np.asarray(history, dtype=np.float64)  # (steps, S)
    fig, (ax_conv, ax_pvs) = plt.subplots(1, 2, figsize=(10, 4))
    ax_conv.plot(np.arange(len(history)), history, lw=0.9)
    ax_conv.set_xlabel("generation / step")
    ax_conv.set_ylabel("best predicted score so far")
    ax_conv.set_title("convergence, one line per start")
    predicted, simulated = np.asarray(predicted, float), np.asarray(simulated, float)
    ax_pvs.scatter(simulated, predicted, s=18)
    finite = np.isfinite(simulated) & np.isfinite(predicted)
    if finite.any():
        lo = float(min(simulated[finite].min(), predicted[finite].min()))
        hi = float(max(simulated[finite].max(), predicted[finite].max()))
        ax_pvs.plot([lo, hi], [lo, hi], color="k", lw=0.8)
    ax_pvs.set_xlabel("re-simulated total cost")
    ax_pvs.set_ylabel("predicted total cost")
    ax_pvs.set_title("candidates")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_cost_per_generation(per_generation: np.ndarray, path: Path, ylabel: str, title: str = "") -> Path:
    """(G, S) best cost of each generation per start (NaN where a start had stopped)."""
    per_generation = np.asarray(per_generation, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6, 4))
    gens = np.arange(1, len(per_generation) + 1)
    for s in range(per_generation.shape[1]):
        ax.plot(gens, per_generation[:, s], marker=".", lw=0.9, label=f"start {s + 1}")
    ax.set_xlabel("generation / step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if per_generation.shape[1] <= 10:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_maps(w: np.ndarray, i_map: np.ndarray, sigma: np.ndarray, g: float, names, path: Path) -> Path:
    """The fitted regional maps (N,) of one parameter set, by region."""
    fig, axes = plt.subplots(3, 1, figsize=(max(8, 0.14 * len(names)), 7), sharex=True)
    for ax, values, label in zip(axes, (w, i_map, sigma), ("w", "I (nA)", "sigma"), strict=True):
        ax.bar(np.arange(len(values)), values, width=0.8)
        ax.set_ylabel(label)
    axes[-1].set_xticks(np.arange(len(names)))
    axes[-1].set_xticklabels(names, rotation=90, fontsize=6)
    axes[0].set_title(f"best fitted set: regional maps (G = {g:.4g})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_targets(names, totals: np.ndarray, se: np.ndarray, truth: np.ndarray, path: Path, labels) -> Path:
    """Validation totals (F, T) +- SE of F fits of the same T targets, with each truth's own total."""
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names)), 4))
    x = np.arange(len(names))
    width = 0.8 / len(totals)
    for k, (t, s, label) in enumerate(zip(totals, se, labels, strict=True)):
        ax.errorbar(x + (k - (len(totals) - 1) / 2) * width, t, yerr=2 * s, fmt="o", capsize=3, label=label)
    if np.isfinite(truth).any():
        ax.scatter(x, truth, marker="_", s=400, color="k", label="the truth's own total")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_ylabel("validation total (R = 20), +- 2 SE")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
