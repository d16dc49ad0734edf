"""Targets from BOLD runs: each run's FC and FCD CDF, and their average over runs
(docs/data.md#targets-from-bold).

The released scripts that built Kong et al.'s group targets average FC in Fisher z (tanh of the mean
of a stabilised atanh) and take the mean of the runs' count CDFs rounded to whole counts. Empirical
runs and synthetic subjects both go through :func:`run_stats` and :func:`average_runs`.
"""

from __future__ import annotations

import numpy as np
import torch

from pmfm.cost.fcd import fc_matrix, fcd_cdf
from pmfm.cost.variants import KONG2021, CostVariant

ATANH_LIMIT = 1.0 - np.finfo(np.float64).eps  # |r| capped here before atanh, as the released code does


def run_stats(bold, variant: CostVariant = KONG2021) -> tuple[np.ndarray, np.ndarray]:
    """Per run, (K, N, T) -> FC (K, N, N) float64 and FCD CDF (K, n_bins) int64.

    FC: Pearson correlation of the regions over the run (:func:`~pmfm.cost.fcd.fc_matrix`), made
    exactly symmetric. FCD CDF: :func:`~pmfm.cost.fcd.fcd_cdf` with ``variant``'s window and bins, in
    counts. Computed in float64 on ``bold``'s device (a tensor may live on a GPU); a run whose FCD
    does not count every window pair (a constant region within a window gives NaN) ends below
    ``fcd_pair_count(T, window)``: the caller decides what that means.
    """
    bold = torch.as_tensor(bold).to(torch.float64)
    if bold.ndim != 3:
        raise ValueError(f"expected runs of shape (K, N, T), got {tuple(bold.shape)}")
    fc = fc_matrix(bold)  # (K, N, N)
    fc = (fc + fc.transpose(-1, -2)) / 2
    cdf = fcd_cdf(bold, variant)  # (K, n_bins) int64
    return fc.cpu().numpy(), cdf.cpu().numpy()


def fisher_mean(fc: np.ndarray) -> np.ndarray:
    """FC averaged over runs in Fisher z: tanh(mean of atanh(FC)), (K, N, N) -> (N, N), diagonal 1.

    |r| is capped at 1 - eps first (the released code's stable atanh), so identical series do not
    give infinities.
    """
    fc = np.asarray(fc, dtype=np.float64)
    if fc.ndim != 3 or fc.shape[1] != fc.shape[2] or len(fc) == 0:
        raise ValueError(f"expected (K, N, N) FC of K >= 1 runs, got {fc.shape}")
    z = np.arctanh(np.clip(fc, -ATANH_LIMIT, ATANH_LIMIT))  # (K, N, N)
    mean = np.tanh(z.mean(0))  # (N, N)
    np.fill_diagonal(mean, 1.0)
    return mean


def mean_cdf(cdf: np.ndarray, rounded: bool = True) -> np.ndarray:
    """Mean of the runs' count CDFs, (K, n_bins) -> (n_bins,).

    ``rounded``: to whole counts, halves away from zero (MATLAB's ``round``, as the released
    scripts), int64; the total stays W (W - 1) / 2 when every run has the same length, and rounding
    keeps the CDF non-decreasing. Otherwise the exact mean, float64.
    """
    cdf = np.asarray(cdf)
    if cdf.ndim != 2 or len(cdf) == 0:
        raise ValueError(f"expected (K, n_bins) CDFs of K >= 1 runs, got {cdf.shape}")
    mean = cdf.astype(np.float64).mean(0)  # (n_bins,)
    return np.floor(mean + 0.5).astype(np.int64) if rounded else mean


def average_runs(fc: np.ndarray, cdf: np.ndarray, rounded: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A target from its runs' statistics: (:func:`fisher_mean` FC (N, N), :func:`mean_cdf` (n_bins,))."""
    return fisher_mean(fc), mean_cdf(cdf, rounded)
