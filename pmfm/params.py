"""The pMFM parameter space: coefficients, regional maps, bounds, feasibility, normalised coordinates.

Kong et al. 2021 (docs/parameters.md): ten free coefficients ``[w0, w1, w2, I0, I1, I2, G, s0, s1, s2]``
expand to regional values through the basis ``B = [1, myelin, gradient]`` (N x 3, covariates raw)::

    w = B @ (w0, w1, w2)      recurrent strength, in [0, 1]
    I = B @ (I0, I1, I2)      external input (nA), in [0, 0.5]
    G                         global coupling, in [1, 10]
    sigma = B @ (s0, s1, s2)  noise amplitude, in [0.0005, 0.01]

The FIC model (docs/fic.md, ``circuit="fic"``) has the same layout with other maps:
``[wEE0, wEE1, wEE2, wEI0, wEI1, wEI2, G, s0, s1, s2]``, w_EE and w_EI in the slots of w and I of
:class:`RegionalParams`; its bounds are the release's, which depend on the mean empirical FC
(:func:`fic_bounds`), or the seed repository's fixed ones (:data:`FIC_FIXED_BOUNDS`).

Bounds hold on the 3N + 1 regional values, not on the coefficients. The non-parametric variant
searches the 3N + 1 regional values directly (order: w, I, G, sigma, as in the released test_all
layout). Searchers work in normalised [0, 1] coordinates over a box that contains the feasible set:
for the parametric space each coefficient's exact range over the feasible set, found by linear
programming once (the constraints are linear in the coefficients).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linprog

COEFFICIENT_NAMES = ("w0", "w1", "w2", "I0", "I1", "I2", "G", "s0", "s1", "s2")
FIC_COEFFICIENT_NAMES = ("wEE0", "wEE1", "wEE2", "wEI0", "wEI1", "wEI2", "G", "s0", "s1", "s2")
MAPS = ("w", "I", "sigma")  # the three regional maps, each linear in the basis
CIRCUITS = ("pmfm", "fic")  # the circuit models: Kong2021's pMFM, the FIC model (docs/fic.md)
MAP_LABELS = {  # what each slot of RegionalParams holds, per circuit (for names and messages)
    "pmfm": {"w": "w", "I": "I", "G": "G", "sigma": "sigma"},
    "fic": {"w": "w_EE", "I": "w_EI", "G": "G", "sigma": "sigma"},
}


class ParamError(ValueError):
    """Parameters outside the model's domain (out of bounds, NaN, wrong shape)."""


@dataclass(frozen=True)
class Bounds:
    """Regional bounds of the pMFM (docs/parameters.md), inclusive."""

    w: tuple[float, float] = (0.0, 1.0)  # recurrent strength, dimensionless
    I: tuple[float, float] = (0.0, 0.5)  # external input, nA
    G: tuple[float, float] = (1.0, 10.0)  # global coupling, dimensionless
    sigma: tuple[float, float] = (
        0.0005,
        0.01,
    )  # noise amplitude, "ms units" (see pmfm.physics.dynamics)

    def of(self, name: str) -> tuple[float, float]:
        return getattr(self, name)


# FIC bounds (docs/fic.md), slots w = w_EE, I = w_EI. The seed repository's fixed ones:
FIC_FIXED_BOUNDS = Bounds(w=(1.0, 10.0), I=(1.0, 5.0), G=(0.0, 3.0), sigma=(0.0005, 0.01))
FIC_BOUNDS = ("release", "fixed")  # the release's FC-dependent bounds (default) or the fixed ones


def fic_bounds(mean_fc: float | None = None, kind: str = "release") -> Bounds:
    """FIC regional bounds: the release's, from the mean empirical FC m (upper triangle), or fixed.

    Release: w_EE in [clip(20m - 3, 0, 7), clip(20m, 1, 10)], w_EI in [clip(22m - 6, 0, 3.5),
    clip(11m, 3.2, 5)], G in [0, 3], sigma in [0.0005, 0.01]. Fixed (the seed repository): w_EE in
    [1, 10], w_EI in [1, 5], G and sigma as the release.
    """
    if kind == "fixed":
        return FIC_FIXED_BOUNDS
    if kind != "release":
        raise ParamError(f"FIC bounds {kind!r}; expected one of {FIC_BOUNDS}")
    if mean_fc is None or not np.isfinite(mean_fc):
        raise ParamError("the release's FIC bounds need the mean empirical FC")
    m = float(mean_fc)
    clip = lambda x, lo, hi: float(min(max(x, lo), hi))  # noqa: E731
    return dataclasses.replace(
        FIC_FIXED_BOUNDS,
        w=(clip(20 * m - 3, 0, 7), clip(20 * m, 1, 10)),
        I=(clip(22 * m - 6, 0, 3.5), clip(11 * m, 3.2, 5)),
    )


@dataclass(frozen=True)
class RegionalParams:
    """A batch of regional parameter sets, the simulator's input."""

    w: torch.Tensor  # (B, N)
    I: torch.Tensor  # (B, N)
    G: torch.Tensor  # (B,)
    sigma: torch.Tensor  # (B, N)

    @property
    def batch_size(self) -> int:
        return int(self.G.shape[0])

    @property
    def n_regions(self) -> int:
        return int(self.w.shape[1])

    def to(self, device=None, dtype=None) -> RegionalParams:
        return RegionalParams(*(t.to(device=device, dtype=dtype) for t in self.astuple()))

    def astuple(self) -> tuple[torch.Tensor, ...]:
        return (self.w, self.I, self.G, self.sigma)

    def __getitem__(self, index) -> RegionalParams:
        return RegionalParams(self.w[index], self.I[index], self.G[index], self.sigma[index])

    def flat(self) -> torch.Tensor:
        """(B, 3N + 1) in the released layout order: w, I, G, sigma."""
        return torch.cat([self.w, self.I, self.G[:, None], self.sigma], dim=1)


@dataclass(frozen=True)
class ParamSpace:
    """Where the simulator's parameters live, parametric (10 coefficients) or regional (3N + 1).

    ``basis`` is the (N, 3) matrix ``[1, myelin, gradient]`` of the training data's parcellation.
    ``circuit`` is the model the parameters belong to: "pmfm" (default) or "fic" (w_EE, w_EI in
    the slots of w and I; ``bounds`` then defaults to the seed's fixed FIC bounds).
    """

    basis: np.ndarray  # (N, 3) float64
    bounds: Bounds | None = None  # None: the circuit's default (pMFM: Bounds(); FIC: FIC_FIXED_BOUNDS)
    mode: Literal["parametric", "regional"] = "parametric"
    circuit: str = "pmfm"
    box: np.ndarray = field(init=False, repr=False)  # (P, 2) [low, high] of the normalised box

    def __post_init__(self):
        basis = np.asarray(self.basis, dtype=np.float64)
        if basis.ndim != 2 or basis.shape[1] != 3:
            raise ParamError(f"basis must be (N, 3) = [1, myelin, gradient], got {basis.shape}")
        if self.mode not in ("parametric", "regional"):
            raise ParamError(f"mode must be 'parametric' or 'regional', got {self.mode!r}")
        if self.circuit not in CIRCUITS:
            raise ParamError(f"circuit must be one of {CIRCUITS}, got {self.circuit!r}")
        if self.bounds is None:
            object.__setattr__(self, "bounds", FIC_FIXED_BOUNDS if self.circuit == "fic" else Bounds())
        object.__setattr__(self, "basis", basis)
        box = self._parametric_box() if self.mode == "parametric" else self._regional_box()
        object.__setattr__(self, "box", box)

    # -- sizes and names ----------------------------------------------------------------------
    @property
    def n_regions(self) -> int:
        return self.basis.shape[0]

    @property
    def dim(self) -> int:
        return 10 if self.mode == "parametric" else 3 * self.n_regions + 1

    @property
    def limits(self) -> Bounds:
        """The regional bounds in force (never None after construction)."""
        assert self.bounds is not None
        return self.bounds

    @property
    def labels(self) -> dict[str, str]:
        """Slot of RegionalParams -> the circuit's name for it (FIC: w -> w_EE, I -> w_EI)."""
        return MAP_LABELS[self.circuit]

    @property
    def names(self) -> tuple[str, ...]:
        if self.mode == "parametric":
            return FIC_COEFFICIENT_NAMES if self.circuit == "fic" else COEFFICIENT_NAMES
        n, lab = self.n_regions, self.labels
        return (
            tuple(f"{lab['w']}_{i}" for i in range(n))
            + tuple(f"{lab['I']}_{i}" for i in range(n))
            + ("G",)
            + tuple(f"sigma_{i}" for i in range(n))
        )

    # -- expansion -----------------------------------------------------------------------------
    def regional(self, theta) -> RegionalParams:
        """Expand (B, P) parameters to regional maps, in theta's dtype and device."""
        theta = self._as_batch(theta)
        n = self.n_regions
        if self.mode == "regional":
            return RegionalParams(theta[:, :n], theta[:, n : 2 * n], theta[:, 2 * n], theta[:, 2 * n + 1 :])
        basis = torch.as_tensor(self.basis, dtype=theta.dtype, device=theta.device)  # (N, 3)
        return RegionalParams(
            w=theta[:, 0:3] @ basis.T,  # (B, N)
            I=theta[:, 3:6] @ basis.T,
            G=theta[:, 6],
            sigma=theta[:, 7:10] @ basis.T,
        )

    def coefficients(self, regional: RegionalParams) -> torch.Tensor:
        """Least-squares coefficients (B, 10) of regional maps (exact when the maps are in the span)."""
        basis = torch.as_tensor(self.basis, dtype=torch.float64)
        pinv = torch.linalg.pinv(basis)  # (3, N)
        r = regional.to(dtype=torch.float64, device="cpu")
        return torch.cat([r.w @ pinv.T, r.I @ pinv.T, r.G[:, None], r.sigma @ pinv.T], dim=1)

    # -- feasibility ---------------------------------------------------------------------------
    def violations(self, theta) -> list[str]:
        """Human-readable list of every set that is not finite or not inside the regional bounds."""
        return [f"set {b}: {problem}" for b, problem in self.problems(theta)]

    def problems(self, theta) -> list[tuple[int, str]]:
        """(set index, what is wrong) for every set that is not finite or not inside the bounds."""
        theta = self._as_batch(theta)
        problems = []
        nonfinite = ~torch.isfinite(theta).all(dim=1)
        for b in torch.nonzero(nonfinite).flatten().tolist():
            bad = [self.names[j] for j in torch.nonzero(~torch.isfinite(theta[b])).flatten().tolist()]
            problems.append((b, f"non-finite value in {', '.join(bad)}"))
        regional = self.regional(theta.to(torch.float64))
        for name in ("w", "I", "G", "sigma"):
            lo, hi = self.limits.of(name)
            values = getattr(regional, name)
            values = values[:, None] if values.ndim == 1 else values
            outside = (values < lo) | (values > hi)
            for b in torch.nonzero(outside.any(dim=1) & ~nonfinite).flatten().tolist():
                regions = torch.nonzero(outside[b]).flatten()
                v = values[b, regions[0]].item()
                where = (
                    "" if name == "G" else f" in {len(regions)} region(s), first region {regions[0].item()}"
                )
                label = self.labels[name]
                problems.append((b, f"{label} = {v:.6g}{where}, expected within [{lo}, {hi}]"))
        return sorted(problems, key=lambda p: p[0])

    def is_feasible(self, theta) -> torch.Tensor:
        """(B,) bool: finite and every regional value inside its bounds."""
        theta = self._as_batch(theta)
        ok = torch.isfinite(theta).all(dim=1)
        regional = self.regional(torch.nan_to_num(theta.to(torch.float64)))
        for name in ("w", "I", "G", "sigma"):
            lo, hi = self.limits.of(name)
            values = getattr(regional, name)
            values = values[:, None] if values.ndim == 1 else values
            ok &= ((values >= lo) & (values <= hi)).all(dim=1).to(ok.device)
        return ok

    def check(self, theta) -> None:
        """Raise ParamError listing the infeasible sets (out of bounds or NaN)."""
        problems = self.violations(theta)
        if problems:
            shown = "\n  ".join(problems[:10])
            more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise ParamError(f"{len(problems)} infeasible parameter set(s):\n  {shown}{more}")

    # -- normalised coordinates ----------------------------------------------------------------
    def normalise(self, theta) -> torch.Tensor:
        """Raw (B, P) -> normalised [0, 1] coordinates of the box (feasible points land inside)."""
        theta = self._as_batch(theta)
        box = torch.as_tensor(self.box, dtype=theta.dtype, device=theta.device)
        return (theta - box[:, 0]) / (box[:, 1] - box[:, 0])

    def denormalise(self, u) -> torch.Tensor:
        """Normalised (B, P) -> raw coefficients (or regional values)."""
        u = self._as_batch(u)
        box = torch.as_tensor(self.box, dtype=u.dtype, device=u.device)
        return box[:, 0] + u * (box[:, 1] - box[:, 0])

    # -- random starts -------------------------------------------------------------------------
    def random_start(self, n: int, rng: np.random.Generator, max_tries: int = 1000) -> torch.Tensor:
        """(n, P) float64 feasible random starts (docs/parameters.md).

        Regional values are drawn uniformly within their bounds; each map is projected onto the
        basis by least squares; G keeps its draw. FIC (docs/fic.md): the myelin coefficients of
        w_EE and w_EI are then halved. A projection that lands outside the bounds (rare) is redrawn.
        """
        out = []
        for _ in range(n):
            for _ in range(max_tries):
                theta = self.draw_start(rng)
                if bool(self.is_feasible(theta[None])[0]):
                    out.append(theta)
                    break
            else:
                raise ParamError(f"no feasible least-squares start in {max_tries} draws")
        return torch.as_tensor(np.stack(out))

    def draw_start(self, rng: np.random.Generator) -> np.ndarray:
        """One (P,) least-squares draw as :meth:`random_start` makes them, not yet checked feasible."""
        n = self.n_regions
        maps = {name: rng.uniform(*self.limits.of(name), size=n) for name in MAPS}
        g = rng.uniform(*self.limits.G)
        if self.mode == "regional":
            return np.concatenate([maps["w"], maps["I"], [g], maps["sigma"]])
        coef = {name: np.linalg.lstsq(self.basis, maps[name], rcond=None)[0] for name in MAPS}
        if self.circuit == "fic":
            coef["w"][1] /= 2  # myelin coefficient of w_EE
            coef["I"][1] /= 2  # myelin coefficient of w_EI
        return np.concatenate([coef["w"], coef["I"], [g], coef["sigma"]])

    # -- internals -----------------------------------------------------------------------------
    def _parametric_box(self) -> np.ndarray:
        """Each coefficient's exact range over the feasible set, by linear programming."""
        box = np.zeros((10, 2))
        for block, name in ((0, "w"), (3, "I"), (7, "sigma")):
            lo, hi = self.limits.of(name)
            # lo <= B c <= hi  <=>  [B; -B] c <= [hi; -lo]
            a_ub = np.vstack([self.basis, -self.basis])
            b_ub = np.concatenate([np.full(self.n_regions, hi), np.full(self.n_regions, -lo)])
            for k in range(3):
                for side, sign in ((0, 1.0), (1, -1.0)):
                    c = np.zeros(3)
                    c[k] = sign
                    res = linprog(c, A_ub=a_ub, b_ub=b_ub, bounds=[(None, None)] * 3, method="highs")
                    if res.status != 0:
                        raise ParamError(f"feasible range of {name} coefficient {k}: {res.message}")
                    box[block + k, side] = res.x[k]
        box[6] = self.limits.G
        return box

    def _regional_box(self) -> np.ndarray:
        n, b = self.n_regions, self.limits
        rows = [b.w] * n + [b.I] * n + [b.G] + [b.sigma] * n
        return np.asarray(rows, dtype=np.float64)

    def _as_batch(self, theta) -> torch.Tensor:
        theta = torch.as_tensor(theta)
        if not torch.is_floating_point(theta):
            theta = theta.to(torch.float64)
        if theta.ndim == 1:
            theta = theta[None]
        if theta.ndim != 2 or theta.shape[1] != self.dim:
            raise ParamError(
                f"expected parameters of shape (B, {self.dim}) for the {self.mode} space "
                f"({', '.join(self.names[:10])}{', ...' if self.dim > 10 else ''}), got {tuple(theta.shape)}"
            )
        return theta


def read_params_csv(path, space: ParamSpace) -> torch.Tensor:
    """Parameter sets from a CSV, (S, P) float64: one set per row in the order of ``space.names``.

    A header is optional; with one, the columns are taken by name (extra columns are ignored).
    Lines starting with ``#`` are comments. A row that is not numbers, or a set that is NaN or
    outside the bounds, is refused with the file, its line and the bound it breaks.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"{path}: parameter file not found; expected a CSV with {space.dim} columns")
    lines = [(i, ln.strip()) for i, ln in enumerate(path.read_text().splitlines(), start=1)]
    rows = [(i, ln.split(",")) for i, ln in lines if ln and not ln.startswith("#")]
    if not rows:
        raise ParamError(f"{path}: no parameter sets; expected one row of {space.dim} values per set")
    header = [h.strip() for h in rows[0][1]]
    columns = list(range(space.dim))
    if not _is_number(header[0]):
        missing = [n for n in space.names if n not in header]
        if missing:
            raise ParamError(
                f"{path}: header lacks column(s) {', '.join(missing[:5])}; "
                f"expected {', '.join(space.names[:10])}"
            )
        columns = [header.index(n) for n in space.names]
        rows = rows[1:]
    values = []
    for line, row in rows:
        if len(row) <= max(columns) or (columns == list(range(space.dim)) and len(row) != space.dim):
            raise ParamError(
                f"{path}: line {line} has {len(row)} values; expected {space.dim} "
                f"({', '.join(space.names[:10])}) (a fit's results.csv, one column per set? add "
                "params_layout=test_all)"
            )
        try:
            values.append([float(row[c]) for c in columns])
        except ValueError as err:
            raise ParamError(f"{path}: line {line}: {err}; expected numbers") from None
    theta = torch.tensor(values, dtype=torch.float64)
    problems = space.problems(theta)
    if problems:
        shown = "\n  ".join(f"{path}: line {rows[b][0]}: {problem}" for b, problem in problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise ParamError(f"{len(problems)} infeasible parameter set(s):\n  {shown}{more}")
    return theta


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
