"""Projected gradient search through a differentiable surrogate (``search=adam``).

Many starts descend the surrogate's score together, in normalised [0, 1] coordinates, with Adam
(torch.optim.Adam on the (S, P) batch of points: each start's coordinates have their own moments, so
the starts do not interact). After every step each point is projected back onto the feasible set
(:class:`~pmfm.search.projection.FeasibleProjection`, exact), so every iterate, and therefore every
returned point, is a feasible parameter set. Each start keeps the best point it visited.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pmfm.params import ParamSpace
from pmfm.search.projection import FeasibleProjection


@dataclass(frozen=True)
class AdamSettings:
    """Budget and step of the projected Adam search."""

    steps: int = 200  # Adam steps per start
    lr: float = 0.01  # in normalised units (the box is [0, 1] per coefficient)

    def __post_init__(self):
        if self.steps < 1 or self.lr <= 0:
            raise ValueError(f"need steps >= 1 and lr > 0, got {self.steps}, {self.lr}")


@dataclass(frozen=True)
class GradientResult:
    """Outcome of a projected gradient search from S starts."""

    theta: torch.Tensor  # (S, P) float64 raw parameters: each start's best visited point (feasible)
    score: torch.Tensor  # (S,) float64 its score
    history: torch.Tensor  # (steps + 1, S) best score so far after each step (row 0: the starts)
    evaluations: int  # surrogate evaluations (parameter sets scored)


def projected_adam(
    score_fn, space: ParamSpace, starts: torch.Tensor, settings: AdamSettings | None = None, progress=None
) -> GradientResult:
    """Minimise ``score_fn`` from raw feasible ``starts`` (S, P) by Adam with exact projection.

    ``score_fn(u, grad=True)`` maps normalised (S, P) to ``(score (S,), extras)``, differentiable
    (a :class:`~pmfm.search.surrogate.SurrogateScore`). Deterministic for fixed starts.
    ``progress(1)`` is called after each step.
    """
    settings = settings or AdamSettings()
    project = FeasibleProjection(space)
    starts = torch.as_tensor(starts, dtype=torch.float64)
    u = project(space.normalise(starts)).clone().requires_grad_(True)  # (S, P)
    optimiser = torch.optim.Adam([u], lr=settings.lr)
    evaluations = 0
    best_u = u.detach().clone()
    best = torch.full((len(u),), float("inf"), dtype=torch.float64)
    history = []
    for step in range(settings.steps + 1):
        optimiser.zero_grad()
        score, _ = score_fn(u, grad=True)  # (S,)
        evaluations += len(u)
        score = score.to(torch.float64)
        finite = torch.isfinite(score.detach())
        improved = finite & (score.detach() < best)
        best_u[improved] = u.detach()[improved]
        best[improved] = score.detach()[improved]
        history.append(best.clone())
        if step == settings.steps:
            break
        torch.where(finite, score, torch.zeros_like(score)).sum().backward()
        optimiser.step()
        with torch.no_grad():
            u.copy_(project(u))
        if progress is not None:
            progress(1)
    theta = space.denormalise(best_u)  # (S, P)
    return GradientResult(theta=theta, score=best, history=torch.stack(history), evaluations=evaluations)
