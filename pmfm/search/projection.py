"""Exact Euclidean projection onto the feasible set of the pMFM coefficients (docs/parameters.md).

The feasible set is linear in the coefficients: each regional map ``B @ c_block`` (w, I, sigma; B the
(N, 3) basis) must lie in its bounds, and G in its interval. In normalised coordinates
``u = (theta - low) / (high - low)`` (``ParamSpace.normalise``) the map blocks stay polytopes,
``A_k u_k <= b_k`` with ``A_k = [B D_k; -B D_k]`` (D_k the block's diagonal scale, 2N rows), and G is
the interval [0, 1]. The projection therefore splits into three 3-dimensional quadratic programs
and one clip:

    min_x ||x - u_k||^2   s.t.  A_k x <= b_k

Each QP is solved exactly (to rounding, in a finite number of steps) as a least-distance program:
Lawson and Hanson (Solving Least Squares Problems, 1974, ch. 23) reduce ``min ||y|| s.t. G y >= h``
to one non-negative least-squares problem, ``min_z ||E z - f||, z >= 0`` with ``E = [G^T; h^T]``,
``f = (0, .., 0, 1)``; then ``y = -r[:n] / r[n]`` for the residual ``r = E z - f``. Here
``y = x - u_k``, ``G = -A_k``, ``h = A_k u_k - b_k``. scipy's ``nnls`` is Lawson and Hanson's
active-set algorithm.

Rounding can leave a projected point a hair outside (a regional value of -1e-17), and "never return
an infeasible point" is a hard requirement of the searchers, so the QP is solved against bounds
tightened by ``margin`` (relative to each bound interval), every result is checked with
``ParamSpace.is_feasible``, and a point that still fails is pulled towards the block's Chebyshev
centre (a strictly interior point found once by linear programming) until it passes.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linprog, nnls

from pmfm.params import ParamSpace

BLOCKS = ((0, "w"), (3, "I"), (7, "sigma"))  # first coefficient of each regional map block
G_INDEX = 6


class FeasibleProjection:
    """Projects normalised coefficients (B, 10) onto the feasible set of ``space``, exactly.

    Args:
        space: a parametric :class:`ParamSpace` (the 205-value regional space is a box: clip it).
        margin: bounds are tightened by ``margin * (high - low)`` before projecting, so that the
            result is feasible despite rounding; the point found is the exact projection onto that
            slightly smaller set.
    """

    def __init__(self, space: ParamSpace, margin: float = 1e-9):
        if space.mode != "parametric":
            raise ValueError(
                "FeasibleProjection is for the 10-coefficient space; clip the regional box instead"
            )
        self.space = space
        self.margin = float(margin)
        box = np.asarray(space.box, dtype=np.float64)  # (10, 2)
        self._low, self._scale = box[:, 0], box[:, 1] - box[:, 0]  # (10,) each
        self._blocks = []
        for first, name in BLOCKS:
            lo, hi = space.limits.of(name)
            shrink = self.margin * (hi - lo)
            lo, hi = lo + shrink, hi - shrink
            cols = slice(first, first + 3)
            bd = space.basis * self._scale[cols]  # (N, 3): B D_k
            offset = space.basis @ self._low[cols]  # (N,): B low_k
            a = np.vstack([bd, -bd])  # (2N, 3)
            b = np.concatenate([hi - offset, offset - lo])  # (2N,)
            self._blocks.append((cols, a, b, _chebyshev_centre(a, b, name)))
        g_lo, g_hi = space.limits.G
        g_shrink = self.margin * (g_hi - g_lo) / self._scale[G_INDEX]
        self._g_interval = (
            (g_lo - self._low[G_INDEX]) / self._scale[G_INDEX] + g_shrink,
            (g_hi - self._low[G_INDEX]) / self._scale[G_INDEX] - g_shrink,
        )

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """(B, 10) normalised coefficients -> (B, 10) their projections (same dtype and device).

        Feasible rows come back unchanged; non-finite rows are replaced by the blocks' centres.
        """
        u = torch.as_tensor(u)
        x = u.detach().to(device="cpu", dtype=torch.float64).numpy().copy()  # (B, 10)
        x = x[None] if x.ndim == 1 else x
        bad_rows = ~np.isfinite(x).all(axis=1)
        for cols, _, _, centre in self._blocks:
            x[bad_rows, cols] = centre
        x[bad_rows, G_INDEX] = 0.5 * sum(self._g_interval)
        x[:, G_INDEX] = np.clip(x[:, G_INDEX], *self._g_interval)
        for cols, a, b, _ in self._blocks:
            block = x[:, cols]  # (B, 3)
            outside = (block @ a.T > b).any(axis=1)  # (B,)
            for i in np.flatnonzero(outside):
                block[i] = _project_polytope(block[i], a, b)
            x[:, cols] = block
        x = self._ensure_feasible(x)
        return torch.as_tensor(x, dtype=u.dtype if u.is_floating_point() else torch.float64).to(u.device)

    def is_feasible(self, u: torch.Tensor) -> torch.Tensor:
        """(B,) bool: the raw parameters of normalised ``u`` are feasible (``ParamSpace.is_feasible``)."""
        return self.space.is_feasible(self.space.denormalise(torch.as_tensor(u, dtype=torch.float64)))

    def _ensure_feasible(self, x: np.ndarray) -> np.ndarray:
        """Pull rows that rounding left outside towards the blocks' centres until they pass."""
        ok = self.is_feasible(torch.from_numpy(x)).numpy()
        pull = 1e-12
        while not ok.all():
            if pull > 1.0:
                raise RuntimeError("projection could not reach a feasible point (is the feasible set empty?)")
            rows = np.flatnonzero(~ok)
            for cols, _, _, centre in self._blocks:
                x[rows, cols] = (1 - pull) * x[rows, cols] + pull * centre
            ok[rows] = self.is_feasible(torch.from_numpy(x[rows])).numpy()
            pull *= 10
        return x


def _project_polytope(point: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The point of {x : a x <= b} closest to ``point`` (3,), by Lawson-Hanson's LDP via NNLS."""
    g = -a  # (M, 3): a (point + y) <= b  <=>  -a y >= a point - b
    h = a @ point - b  # (M,)
    e = np.vstack([g.T, h[None]])  # (4, M)
    f = np.zeros(e.shape[0])
    f[-1] = 1.0
    z, _ = nnls(e, f, maxiter=50 * e.shape[1])
    r = e @ z - f  # (4,)
    if abs(r[-1]) < 1e-300:
        raise RuntimeError("the feasible polytope is empty")
    return point - r[:-1] / r[-1]


def _chebyshev_centre(a: np.ndarray, b: np.ndarray, name: str) -> np.ndarray:
    """(3,) the centre of the largest ball inside {x : a x <= b}: a strictly interior point."""
    norms = np.linalg.norm(a, axis=1)  # (M,)
    # maximise r  s.t.  a x + r |a_i| <= b ; variables (x, r)
    res = linprog(
        c=np.array([0.0, 0.0, 0.0, -1.0]),
        A_ub=np.hstack([a, norms[:, None]]),
        b_ub=b,
        bounds=[(None, None)] * 3 + [(0, None)],
        method="highs",
    )
    if res.status != 0 or res.x[3] <= 0:
        raise ValueError(f"the feasible set of the {name} map has no interior: {res.message}")
    return res.x[:3]
