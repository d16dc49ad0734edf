"""Assumption 2, smoothness: simulated costs vary smoothly with the parameters, so a surrogate can
interpolate between samples. Cost differences along straight segments in parameter space, binned by
distance, against the noise floor (the same point simulated twice).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from scipy.stats import mannwhitneyu

from pmfm.evaluate import evaluate_params
from pmfm.pipelines.config import load_data, simulator_of, variant_of
from pmfm.pipelines.progress import progress_bar
from pmfm.plots import plt
from pmfm.studies.report import markdown_table, provenance, write_summary, write_table
from pmfm.studies.sets import study_sets

ALPHA = 0.05  # one-sided test level: a bin's differences exceed the noise floor's


def segment_points(start: torch.Tensor, end: torch.Tensor, fractions) -> torch.Tensor:
    """(S, K, P) points start + t (end - start) for each fraction t; feasible when both ends are."""
    t = torch.as_tensor(list(fractions), dtype=torch.float64)[None, :, None]  # (1, K, 1)
    return start[:, None] + t * (end - start)[:, None]


def pair_differences(total: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every within-segment pair: distances (M,) and |total differences| (M,).

    ``total`` (S, K) costs of the points, ``u`` (S, K, P) their normalised coordinates.
    """
    s, k = total.shape
    i, j = np.triu_indices(k, 1)
    dist = np.linalg.norm(u[:, i] - u[:, j], axis=-1).reshape(-1)  # (S * pairs,)
    diff = np.abs(total[:, i] - total[:, j]).reshape(-1)
    return dist, diff


def distance_bins(dist, diff, noise, n_bins: int) -> list[dict]:
    """Per log-spaced distance bin: count, mean and median |diff|, RMS excess over noise, test vs noise."""
    positive = dist > 0
    edges = np.geomspace(dist[positive].min(), dist.max() * (1 + 1e-9), n_bins + 1)
    msd_noise = float(np.mean(noise**2))
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = positive & (dist >= lo) & (dist < hi)
        if not inside.any():
            continue
        d = diff[inside]
        p = float(mannwhitneyu(d, noise, alternative="greater").pvalue) if len(d) > 1 else np.nan
        rows.append({"distance_lo": float(lo), "distance_hi": float(hi), "n_pairs": int(inside.sum()),
                     "mean_abs_diff": float(d.mean()), "median_abs_diff": float(np.median(d)),
                     "excess_rms": float(np.sqrt(max(np.mean(d**2) - msd_noise, 0.0))),
                     "p_greater_than_noise": p, "within_noise": bool(not p < ALPHA)})  # fmt: skip
    return rows


def within_noise_distance(bins: list[dict]) -> float:
    """Upper edge of the last bin before the first one that is not within noise (0: none is)."""
    reach = 0.0
    for b in bins:
        if not b["within_noise"]:
            break
        reach = b["distance_hi"]
    return reach


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Simulate every segment point twice (one call, independent noise); bin pair differences.

    Segments run from a set of ``study.sets`` to a random feasible set (the feasible set is convex:
    every point between is feasible); the points at ``study.fractions`` are simulated twice, R
    repeats each. Noise floor: |total(run 1) - total(run 2)| of one point; pair difference:
    |total(p) - total(q)| of two points of a segment (same run) against their distance in normalised
    coordinates. A log-spaced distance bin is within noise unless its differences exceed the noise
    floor's (one-sided Mann-Whitney U, p < 0.05); the reported distance is the upper edge of the last
    bin before the first one that is not.
    """
    s = cfg.study
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    data = load_data(cfg.data, simulator, variant)  # a shortened protocol: FCD rescaled (data.fcd_n_tr)
    space = simulator.param_space(data)
    start = study_sets(s.sets, s.n_segments, space, cfg.seed)  # (S, P)
    end = space.random_start(len(start), np.random.default_rng([int(cfg.seed), 13]))
    points = segment_points(start, end, s.fractions)  # (S, K, P)
    n_seg, k = points.shape[:2]
    flat = points.reshape(-1, space.dim)
    with progress_bar(2 * len(flat) * int(s.repeats), "smoothness", enabled=cfg.progress) as bar:
        costs = evaluate_params(torch.cat([flat, flat]), space, data, simulator, repeats=s.repeats,
                                seed=int(cfg.seed), variant=variant, progress=bar.update).costs  # fmt: skip
    total = costs.total.numpy().reshape(2, n_seg, k)  # (runs, S, K)
    valid = (costs.n_valid().numpy() > 0).reshape(2, n_seg, k)  # both terms had a valid repeat
    total = np.where(valid, total, np.nan)  # an invalid point (cost 10 per term) is left out of every pair
    u = space.normalise(flat).numpy().reshape(n_seg, k, space.dim)  # (S, K, P)
    noise = np.abs(total[0] - total[1]).reshape(-1)  # (S * K,)
    noise = noise[np.isfinite(noise)]
    d1, diff1 = pair_differences(total[0], u)
    d2, diff2 = pair_differences(total[1], u)
    dist, diff = np.concatenate([d1, d2]), np.concatenate([diff1, diff2])
    dist, diff = dist[np.isfinite(diff)], diff[np.isfinite(diff)]
    bins = distance_bins(dist, diff, noise, int(s.n_bins))
    reach = within_noise_distance(bins)

    rows = []
    length = np.linalg.norm(u[:, -1] - u[:, 0], axis=-1)
    for si in range(n_seg):
        for ki, t in enumerate(s.fractions):
            rows.append({"segment": si, "fraction": float(t), "distance_from_start": float(t * length[si]),
                         "total_run1": float(total[0, si, ki]), "total_run2": float(total[1, si, ki]),
                         "noise_abs_diff": float(abs(total[0, si, ki] - total[1, si, ki])),
                         "valid_run1": bool(valid[0, si, ki]), "valid_run2": bool(valid[1, si, ki]),
                         "repeats": int(s.repeats)})  # fmt: skip
    write_table(rows, out_dir / "results.csv")
    write_table(bins, out_dir / "distance_bins.csv")
    if cfg.plot:
        plot(dist, diff, noise, bins, reach, out_dir / "smoothness.png", s.repeats)
        plot_profiles(rows, n_seg, out_dir / "profiles.png", s.repeats)
    largest = bins[-1]
    factor = largest["mean_abs_diff"] / max(noise.mean(), 1e-12)
    n_invalid = int((~valid).sum())
    conclusion = [
        f"{n_seg} segments x {k} points, each simulated twice at R = {s.repeats} "
        f"({simulator.protocol.n_tr} TRs), {n_invalid} of {valid.size} runs invalid and left out; "
        f"segment lengths {length.min():.3f}-{length.max():.3f} (normalised).",
        f"Noise floor (same point, fresh noise): mean |diff| {noise.mean():.4f}, "
        f"median {np.median(noise):.4f}.",
        f"Differences stay within noise up to a normalised distance of {reach:.3g}"
        + (" (no bin was within noise: below the smallest distance tested)" if reach == 0 else "")
        + f"; in the largest-distance bin ({largest['distance_lo']:.3g}-{largest['distance_hi']:.3g}) "
        f"the mean |diff| is {largest['mean_abs_diff']:.4f} ({factor:.1f} x the noise floor).",
        (
            "Costs vary smoothly on the scale of the sampling noise: a surrogate can interpolate between "
            f"samples closer than about {reach:.3g}; farther apart the cost changes beyond the noise."
            if reach > 0
            else "Even the closest pairs differ beyond the noise floor: smoothness not shown at this scale."
        ),
    ]
    summary = {
        "study": "smoothness",
        "n_segments": n_seg,
        "fractions": list(s.fractions),
        "repeats": int(s.repeats),
        "n_tr": simulator.protocol.n_tr,
        "noise_floor_mean": float(noise.mean()),
        "noise_floor_median": float(np.median(noise)),
        "within_noise_distance": reach,
        "bins": bins,
        "provenance": provenance(simulator.device),
    }
    cols = ["distance_lo", "distance_hi", "n_pairs", "mean_abs_diff", "excess_rms", "p_greater_than_noise",
            "within_noise"]  # fmt: skip
    return write_summary(out_dir, "Assumption 2: smoothness", summary, conclusion, markdown_table(bins, cols))


def plot(dist, diff, noise, bins, reach, path: Path, repeats: int) -> None:
    """|cost difference| against normalised distance, bin means, the noise floor band."""

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    keep = dist > 0
    ax.scatter(dist[keep], diff[keep], s=6, alpha=0.35, color="C0", label="pairs on a segment")
    centers = [np.sqrt(b["distance_lo"] * b["distance_hi"]) for b in bins]
    ax.plot(centers, [b["mean_abs_diff"] for b in bins], "o-", color="C1", label="bin mean")
    ax.axhline(noise.mean(), color="k", ls="--", label=f"noise floor mean ({noise.mean():.3f})")
    ax.axhspan(np.quantile(noise, 0.25), np.quantile(noise, 0.75), color="k", alpha=0.1, label="noise IQR")
    if reach > 0:
        ax.axvline(reach, color="C2", ls=":", label=f"within noise below {reach:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("distance in normalised coordinates")
    ax.set_ylabel(f"|total difference| (R = {repeats})")
    ax.legend(fontsize=8)
    ax.set_title("Cost differences vs distance, against the noise floor")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_profiles(rows: list[dict], n_seg: int, path: Path, repeats: int) -> None:
    """Total cost along each segment (both runs)."""

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for si in range(n_seg):
        seg = [r for r in rows if r["segment"] == si]
        d = [r["distance_from_start"] for r in seg]
        ax.plot(d, [r["total_run1"] for r in seg], "o-", color=f"C{si % 10}", ms=3)
        ax.plot(d, [r["total_run2"] for r in seg], "x--", color=f"C{si % 10}", ms=3, alpha=0.6)
    ax.set_xlabel("distance from the segment's start (normalised)")
    ax.set_ylabel(f"total (R = {repeats}); o run 1, x run 2")
    ax.set_title("Cost along each segment")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
