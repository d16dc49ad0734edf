"""The emulator of simulated statistics as an objective: each set costed against its own target.

An :class:`~pmfm.models.emulator.EmulatorModule` predicts target-free statistics, once for a batch;
their cost against each set's target follows by ``cost_from_stats``, as for a bank's stored rows.
With several targets the search's sample ids say which target a set belongs to
(``target_of(keys)``, as :class:`~pmfm.evaluate.SimulatorObjective`), so one objective serves every
target of a batched run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from pmfm.cost import CostVariant
from pmfm.cost.stats import cost_from_stats
from pmfm.cost.variants import KONG2021
from pmfm.data import EmpiricalData
from pmfm.evaluate.objective import Evaluated
from pmfm.models.emulator import EmulatorModule, statistics_metric
from pmfm.params import ParamSpace
from pmfm.search.surrogate import INFEASIBLE_SCORE


class EmulatorObjective:
    """Emulated costs of (B, P) raw parameters against ``targets[target_of(keys)]`` (one target:
    ``target_of`` may be None). Infeasible sets score ``INFEASIBLE_SCORE`` and are invalid."""

    def __init__(
        self,
        space: ParamSpace,
        module: EmulatorModule,
        targets: Sequence[EmpiricalData],
        variant: CostVariant = KONG2021,
        target_of: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        if len(targets) > 1 and target_of is None:
            raise ValueError("several targets need target_of(keys) to say whose each set is")
        self.space, self.module, self.targets = space, module, list(targets)
        self.variant, self.target_of = variant, target_of
        self.n_evaluations = 0

    @torch.no_grad()
    def __call__(
        self, theta: torch.Tensor, *, keys: torch.Tensor | None = None, generation: int = 0
    ) -> Evaluated:
        """Score (B, P) raw parameters (``generation`` is ignored: the emulator has no noise)."""
        theta = torch.as_tensor(theta, dtype=torch.float64)
        theta = theta[None] if theta.ndim == 1 else theta
        n = len(theta)
        if self.target_of is None:
            which = torch.zeros(n, dtype=torch.long)
        elif keys is None:
            raise ValueError("several targets: the sets' keys are needed to find their targets")
        else:
            which = self.target_of(torch.as_tensor(keys)).long()
        feasible = self.space.is_feasible(theta).cpu()  # (B,)
        total = torch.full((n,), INFEASIBLE_SCORE, dtype=torch.float64)
        terms = {k: torch.full((n,), float("nan"), dtype=torch.float64) for k in ("fc_cost", "ks")}
        valid = torch.zeros(n, dtype=torch.bool)
        rows = torch.nonzero(feasible).flatten()  # one emulator pass for every target's sets
        stats = self.module.predict_stats(self.space.normalise(theta[rows])) if len(rows) else None
        for t in which[rows].unique().tolist():
            mine = torch.nonzero(which[rows] == t).flatten()
            data = self.targets[t]
            assert stats is not None
            costs = cost_from_stats(stats[mine], data.fc, data.fcd_cdf, self.variant, "fit")
            at = rows[mine]
            total[at] = costs.total.double()
            terms["fc_cost"][at], terms["ks"][at] = costs.fc_cost.double(), costs.ks.double()
            valid[at] = (costs.n_valid_fc > 0) & (costs.n_valid_fcd > 0)
        self.n_evaluations += n
        return Evaluated(total=total, valid=valid, terms=terms)


def shaped_covariances(space: ParamSpace, module: EmulatorModule, theta, *, step: float, cap) -> torch.Tensor:
    """(S, P, P) raw covariances of CMA-ES steps at (S, P) raw points, shaped by the emulator: along
    each eigendirection of its statistics metric a standard deviation of ``step / sqrt(eigenvalue)``
    (normalised units: a step changes the emulated statistics by about ``step**2`` loss units), at
    most ``cap`` ((S,) or a number). The steep directions (mean w and I) get short steps, the flat
    ones long steps, so a short search does not land on the walls of a narrow valley."""
    theta = torch.as_tensor(theta, dtype=torch.float64)
    metric = statistics_metric(module, space.normalise(theta))  # (S, P, P)
    values, vectors = torch.linalg.eigh(metric)  # (S, P), (S, P, P)
    cap = torch.as_tensor(cap, dtype=torch.float64).reshape(-1, 1)
    std = torch.minimum(step / values.clamp_min(1e-300).sqrt(), cap)  # (S, P) along each eigendirection
    cov_u = vectors @ torch.diag_embed(std**2) @ vectors.transpose(1, 2)  # (S, P, P) normalised units
    box = torch.as_tensor(space.box, dtype=torch.float64)
    width = box[:, 1] - box[:, 0]  # (P,) raw = low + u width
    return width[:, None] * cov_u * width[None, :]
