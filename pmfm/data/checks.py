"""Validation of empirical data: one function per quantity, each raising `DataError`.

Every check takes the array and the file it came from, and on failure names the file, the
problem and the expected value, shape or range, with the index of the first offending entry
where that is cheap to find. Checks return a cleaned float64/int64 copy on success.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SC_SYMMETRY_RTOL = 1e-6  # asymmetry tolerance for SC, relative to max |SC|
FC_ATOL = 1e-6  # tolerance on FC diagonal (= 1), range [-1, 1] and symmetry (Pearson units)
FCD_TOTAL_RTOL = 1e-6  # a non-integer (unrounded mean) FCD CDF's final value vs the pair count, relative


class DataError(ValueError):
    """Invalid or missing empirical data.

    The message always reads ``<full path>: <problem>; expected <expected>``.
    """

    def __init__(self, path: str | Path, problem: str, expected: str | None = None):
        self.path = Path(path)
        self.problem = problem
        self.expected = expected
        message = f"{self.path}: {problem}"
        if expected:
            message += f"; expected {expected}"
        super().__init__(message)


def fcd_pair_count(n_tr: int, window: int) -> int:
    """Number of window pairs in the FCD's strict upper triangle (the FCD CDF's final count).

    With windows of `window` TRs sliding by one TR over `n_tr` TRs there are
    W = n_tr - window + 1 windows and W * (W - 1) / 2 pairs: 624,403 for 1,200 TRs and 83.
    """
    n_tr, window = int(n_tr), int(window)
    if window < 1 or n_tr < window:
        raise ValueError(f"need 1 <= window <= n_tr, got n_tr={n_tr}, window={window}")
    n_windows = n_tr - window + 1
    return n_windows * (n_windows - 1) // 2


def _first_index(mask: np.ndarray) -> str:
    """'row i, col j' (or 'index i') of the first True entry of `mask`."""
    idx = tuple(int(i) for i in np.argwhere(mask)[0])
    if len(idx) == 2:
        return f"row {idx[0]}, col {idx[1]}"
    return f"index {idx[0]}"


def _check_finite(x: np.ndarray, path: Path, what: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        raise DataError(
            path,
            f"{what} has {int(bad.sum())} NaN/Inf value(s), first at {_first_index(bad)}",
            "finite numbers only",
        )


def _check_square(x: np.ndarray, path: Path, what: str) -> None:
    if x.ndim != 2 or x.shape[0] != x.shape[1] or x.shape[0] < 2:
        raise DataError(path, f"{what} has shape {x.shape}", "a square (N, N) matrix with N >= 2")


def check_sc(sc: np.ndarray, path: Path) -> np.ndarray:
    """Structural connectivity: square, finite, non-negative, symmetric, not all zero.

    Kept raw (streamline weights as in the file); the simulator normalises it.
    """
    sc = np.asarray(sc, dtype=np.float64)  # (N, N)
    _check_square(sc, path, "SC")
    _check_finite(sc, path, "SC")
    neg = sc < 0
    if neg.any():
        i = _first_index(neg)
        raise DataError(path, f"SC has {int(neg.sum())} negative value(s), first at {i}", "values >= 0")
    scale = float(sc.max())
    if scale == 0.0:
        raise DataError(path, "SC is all zeros", "at least one positive connection")
    asym = np.abs(sc - sc.T) > SC_SYMMETRY_RTOL * scale
    if asym.any():
        raise DataError(
            path,
            f"SC is not symmetric, first at {_first_index(asym)}",
            f"SC == SC.T within {SC_SYMMETRY_RTOL:g} x max(SC)",
        )
    return sc


def check_fc(fc: np.ndarray, path: Path) -> np.ndarray:
    """Functional connectivity (Pearson): square, finite, diagonal 1, in [-1, 1], symmetric.

    Values within `FC_ATOL` outside [-1, 1] are clipped, so that atanh stays finite.
    """
    fc = np.asarray(fc, dtype=np.float64)  # (N, N)
    _check_square(fc, path, "FC")
    _check_finite(fc, path, "FC")
    diag_bad = np.abs(np.diag(fc) - 1.0) > FC_ATOL
    if diag_bad.any():
        i = int(np.argmax(diag_bad))
        raise DataError(
            path,
            f"FC diagonal is not 1: FC[{i}, {i}] = {fc[i, i]:g}",
            f"diagonal 1 within {FC_ATOL:g}",
        )
    out = np.abs(fc) > 1.0 + FC_ATOL
    if out.any():
        raise DataError(
            path,
            f"FC has {int(out.sum())} value(s) outside [-1, 1], first at {_first_index(out)}",
            "Pearson correlations in [-1, 1]",
        )
    asym = np.abs(fc - fc.T) > FC_ATOL
    if asym.any():
        raise DataError(
            path,
            f"FC is not symmetric, first at {_first_index(asym)}",
            f"FC == FC.T within {FC_ATOL:g}",
        )
    return np.clip(fc, -1.0, 1.0)


def check_fcd_cdf(cdf: np.ndarray, path: Path, *, n_bins: int, n_tr: int, window: int) -> np.ndarray:
    """FCD cumulative histogram (counts): a vector of `n_bins` non-negative, non-decreasing values
    ending at `fcd_pair_count(n_tr, window)`, shape (n_bins,).

    Whole counts (the released files, and rounded means) are returned as int64 and must end at the
    total exactly. A mean of count CDFs that was not rounded (non-integer values) is accepted too and
    returned as float64; its final value must equal the total within `FCD_TOTAL_RTOL`.
    """
    cdf = np.asarray(cdf)
    if cdf.dtype.kind not in "biuf":
        raise DataError(path, f"FCD CDF has dtype {cdf.dtype}", "a numeric array of counts")
    if cdf.ndim > 2 or (cdf.ndim == 2 and min(cdf.shape) != 1):
        raise DataError(path, f"FCD CDF has shape {cdf.shape}", f"({n_bins}, 1) or (1, {n_bins})")
    cdf = cdf.reshape(-1)  # (n_bins,)
    if cdf.size != n_bins:
        raise DataError(path, f"FCD CDF has {cdf.size} bins", f"n_bins = {n_bins} bins")
    values = cdf.astype(np.float64)
    _check_finite(values, path, "FCD CDF")
    whole = bool((values == np.round(values)).all())
    neg = values < 0
    if neg.any():
        raise DataError(
            path,
            f"FCD CDF has negative value {values[neg][0]:g} at {_first_index(neg)}",
            "counts >= 0",
        )
    drop = np.diff(values) < 0
    if drop.any():
        i = int(np.argmax(drop)) + 1
        raise DataError(
            path,
            f"FCD CDF decreases at bin {i} ({values[i - 1]:g} -> {values[i]:g})",
            "a non-decreasing cumulative histogram",
        )
    total = fcd_pair_count(n_tr, window)
    if values[-1] != total and (whole or abs(values[-1] - total) > FCD_TOTAL_RTOL * total):
        within = "" if whole else f" (within {FCD_TOTAL_RTOL:g} relative for a non-integer mean)"
        raise DataError(
            path,
            f"FCD CDF ends at {values[-1]:.10g}",
            f"final total {total}{within} = W*(W-1)/2 window pairs, W = n_tr - window + 1 "
            f"(n_tr={n_tr}, window={window})",
        )
    return values.astype(np.int64) if whole else values


def check_covariate(x: np.ndarray, path: Path, n_regions: int, what: str) -> np.ndarray:
    """A regional covariate (myelin, gradient): finite, one value per region. Shape (N,)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)  # (N,)
    if x.size != n_regions:
        raise DataError(path, f"{what} has {x.size} values", f"{n_regions} (one per region, N from SC)")
    _check_finite(x, path, what)
    return x


def check_names(names: list[str], path: Path, n_regions: int) -> tuple[str, ...]:
    """Region names: one non-empty string per region."""
    if len(names) != n_regions:
        raise DataError(path, f"{len(names)} region names", f"{n_regions} (one per region, N from SC)")
    empty = [i for i, n in enumerate(names) if not n]
    if empty:
        raise DataError(path, f"region name {empty[0]} is empty", "non-empty names")
    return tuple(names)
