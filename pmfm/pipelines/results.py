"""Fitted parameter sets in the released ``test_all.csv`` layout (docs/fitting.md#output-layout).

One column per chosen set, no header, rows (1-based, N regions; N = 68 gives the released numbers):

    1            start index (1-based)
    2            generation (1-based; 0 where a set has none)
    3-5          training   FC cost, KS, total
    6-8          validation FC cost, KS, total
    9-11         test       FC cost, KS, total (NaN when the test stage was skipped)
    12..11+N     w, one row per region          (12-79 at N = 68)
    12+N..11+2N  I                              (80-147)
    12+2N        G                              (148)
    13+2N..12+3N sigma                          (149-216)
    13+3N..22+3N the 10 coefficients w0 w1 w2 I0 I1 I2 G s0 s1 s2 (217-226): pmfm's addition

Rows 1..12+3N are exactly the released layout, so tools written for it keep working; the coefficient
rows below let the project read its own files back without a least-squares projection.
:func:`read_results` also reads a released file without them (the regional maps are then projected
onto the basis, which is exact for maps that came from coefficients).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pmfm.params import COEFFICIENT_NAMES, ParamError, ParamSpace, RegionalParams

HEAD_ROWS = 11  # start, generation, 3 x (fc_cost, ks, total)
STAGES = ("train", "vali", "test")


def n_rows(n_regions: int, with_coefficients: bool = True) -> int:
    """Rows of a results file for ``n_regions`` regions (226 at N = 68, 216 in the released files)."""
    return HEAD_ROWS + 3 * n_regions + 1 + (len(COEFFICIENT_NAMES) if with_coefficients else 0)


def row_labels(region_names) -> list[str]:
    """Human-readable label of every row, in order (for documentation and the maps table)."""
    labels = ["start", "generation"]
    labels += [f"{stage}_{term}" for stage in STAGES for term in ("fc_cost", "ks", "total")]
    labels += [f"w_{r}" for r in region_names] + [f"I_{r}" for r in region_names] + ["G"]
    labels += [f"sigma_{r}" for r in region_names]
    return labels + list(COEFFICIENT_NAMES)


@dataclass(frozen=True)
class FitResults:
    """The chosen parameter sets of a fit and their costs; K sets."""

    theta: torch.Tensor  # (K, 10) float64 coefficients
    start: np.ndarray  # (K,) int, 1-based
    generation: np.ndarray  # (K,) int, 1-based (0: none)
    costs: dict[str, np.ndarray]  # stage ("train", "vali", "test") -> (K, 3): fc_cost, ks, total

    def __post_init__(self):
        k = self.theta.shape[0]
        for stage in STAGES:
            if self.costs.get(stage) is None or np.shape(self.costs[stage]) != (k, 3):
                raise ValueError(f"costs[{stage!r}] must be ({k}, 3) (fc_cost, ks, total)")

    def table(self, space: ParamSpace) -> np.ndarray:
        """(n_rows, K) float64 in the layout of the module docstring."""
        regional = space.regional(self.theta).to(dtype=torch.float64).flat().numpy()  # (K, 3N + 1)
        head = np.column_stack([self.start, self.generation, *(self.costs[s] for s in STAGES)])  # (K, 11)
        return np.column_stack([head, regional, self.theta.numpy()]).T


def write_results(path: Path, results: FitResults, space: ParamSpace) -> Path:
    """Write ``results`` to ``path`` (CSV, one column per set), atomically."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    np.savetxt(tmp, results.table(space), delimiter=",", fmt="%.17g")
    tmp.replace(path)
    return path


def read_results(path: Path, space: ParamSpace) -> FitResults:
    """Read a results file (pmfm's, or a released test_all.csv without coefficient rows).

    Raises ParamError naming the file and the expected shape when the rows do not fit ``space``.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"{path}: results file not found")
    try:
        table = np.loadtxt(path, delimiter=",", ndmin=2)  # (rows, K)
    except ValueError as err:
        raise ParamError(f"{path}: not a numeric CSV in the test_all layout ({err})") from None
    n = space.n_regions
    full, released = n_rows(n, True), n_rows(n, False)
    if table.shape[0] not in (full, released):
        raise ParamError(
            f"{path}: {table.shape[0]} rows; the test_all layout for {n} regions has {released} rows "
            f"(released) or {full} (with the 10 coefficients), one column per parameter set"
        )
    head, regional = table[:HEAD_ROWS], table[HEAD_ROWS:released]
    if table.shape[0] == full:
        theta = torch.as_tensor(table[released:].T.copy())  # (K, 10)
    else:
        flat = torch.as_tensor(regional.T.copy())  # (K, 3N + 1): w, I, G, sigma
        maps = RegionalParams(flat[:, :n], flat[:, n : 2 * n], flat[:, 2 * n], flat[:, 2 * n + 1 :])
        theta = space.coefficients(maps)
    costs = {s: head[2 + 3 * i : 5 + 3 * i].T.copy() for i, s in enumerate(STAGES)}
    return FitResults(theta=theta, start=head[0].astype(int), generation=head[1].astype(int), costs=costs)


def write_maps(path: Path, theta: torch.Tensor, space: ParamSpace, region_names) -> Path:
    """CSV of the regional maps of (K, 10) sets: one row per region, columns w_k, I_k, sigma_k (and G)."""
    regional = space.regional(torch.as_tensor(theta, dtype=torch.float64))
    k = regional.batch_size
    header = ["region"] + [f"{m}_{j + 1}" for j in range(k) for m in ("w", "I", "sigma", "G")]
    lines = [",".join(header)]
    for i, name in enumerate(region_names):
        values = []
        for j in range(k):
            values += [regional.w[j, i], regional.I[j, i], regional.sigma[j, i], regional.G[j]]
        lines.append(",".join([str(name)] + [f"{float(v):.10g}" for v in values]))
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path
