"""Where dataset samples come from: deterministic streams of feasible parameter sets.

Each shard has its own stream, seeded by (seed, shard), so shards are independent and a shard
interrupted after k rows resumes by replaying (cheaply) the first k points of its stream.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import qmc

from pmfm.params import ParamSpace

DRAW_BATCH = 4096  # candidate points drawn per rejection round
START_BATCH = 64  # start: least-squares draws per round (each solves a small least-squares problem)


class FeasibleStream:
    """An endless, deterministic stream of feasible points of ``space`` for one shard.

    kind ``uniform``: uniform in the normalised box; ``sobol``: a scrambled Sobol sequence in the
    box; ``around``: Gaussian perturbations (``scale``, in normalised units) of ``centers``, cycled;
    ``start``: the fits' own random starts (:meth:`ParamSpace.random_start`), far denser near the
    middle of the feasible set than the box's Sobol points.
    Infeasible candidates are rejected; ``acceptance`` reports the accepted share so far.
    """

    def __init__(
        self, space: ParamSpace, kind: str, seed: int, shard: int, centers=None, scale: float = 0.02
    ):
        if kind not in ("uniform", "sobol", "around", "start"):
            raise ValueError(f"unknown sampler {kind!r}; expected uniform, sobol, around or start")
        self.space, self.kind, self.scale = space, kind, scale
        self.rng = np.random.default_rng([seed, shard])
        self.sobol = qmc.Sobol(d=space.dim, scramble=True, seed=self.rng) if kind == "sobol" else None
        if kind == "around":
            if centers is None or len(centers) == 0:
                raise ValueError("the 'around' sampler needs centers (dataset.centers_csv)")
            self.centers = space.normalise(torch.as_tensor(centers, dtype=torch.float64)).numpy()
            self.next_center = 0
        self.drawn = self.accepted = 0
        self.buffer = np.zeros((0, space.dim))

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drawn if self.drawn else float("nan")

    def take(self, n: int) -> torch.Tensor:
        """The next ``n`` feasible points, (n, P) float64 raw coefficients."""
        while len(self.buffer) < n:
            u = self._draw()
            theta = self.space.denormalise(torch.as_tensor(u)).numpy()
            ok = self.space.is_feasible(torch.as_tensor(theta)).numpy()
            self.drawn += len(u)
            self.accepted += int(ok.sum())
            self.buffer = np.concatenate([self.buffer, theta[ok]])
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return torch.as_tensor(out)

    def _draw(self) -> np.ndarray:
        if self.kind == "uniform":
            return self.rng.uniform(size=(DRAW_BATCH, self.space.dim))
        if self.sobol is not None:
            return self.sobol.random(DRAW_BATCH)
        if self.kind == "start":
            draws = np.stack([self.space.draw_start(self.rng) for _ in range(START_BATCH)])
            return self.space.normalise(torch.as_tensor(draws)).numpy()
        index = (self.next_center + np.arange(DRAW_BATCH)) % len(self.centers)
        self.next_center = int((self.next_center + DRAW_BATCH) % len(self.centers))
        return self.centers[index] + self.scale * self.rng.standard_normal((DRAW_BATCH, self.space.dim))
