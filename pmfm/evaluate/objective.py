"""What a searcher minimises: a batch of parameter sets in, one total cost per set out.

Every searcher talks to an :class:`Objective`: it hands over the whole population of a generation,
(B, P) raw parameters of ``objective.space``, in one call, and gets back an :class:`Evaluated` with one
total per set (lower is better, always finite), a validity flag and the cost terms. The simulator
(:class:`SimulatorObjective`, through :func:`pmfm.evaluate.costs.evaluate_params`), a surrogate
(:mod:`pmfm.search.surrogate`) and plain functions (:class:`FunctionObjective`, for tests) provide it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from pmfm.cost import KONG2021, CostVariant
from pmfm.cost.stats import FC_Z_DTYPE, N_LEVELS
from pmfm.evaluate.costs import evaluate_params
from pmfm.params import ParamSpace

TERM_NAMES = ("fc_cost", "fc_l1", "ks", "n_valid_fc", "n_valid_fcd")


@dataclass(frozen=True)
class Evaluated:
    """An objective's answer for B parameter sets; tensors on CPU."""

    total: torch.Tensor  # (B,) float64, lower is better, always finite (invalid sets get a large value)
    valid: torch.Tensor  # (B,) bool: the set was feasible and every cost term came from a valid repeat
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (B, ...), e.g. fc_cost, ks

    def __post_init__(self):
        if self.total.ndim != 1 or self.valid.shape != self.total.shape:
            raise ValueError(
                f"total and valid must both be (B,), got {tuple(self.total.shape)}, {tuple(self.valid.shape)}"
            )
        for name, values in self.terms.items():  # per-set scalars (B,), or arrays (B, ...) such as mean_rate
            if values.shape[:1] != self.total.shape:
                raise ValueError(
                    f"term {name!r} has shape {tuple(values.shape)}, expected {tuple(self.total.shape)}"
                )

    def __len__(self) -> int:
        return int(self.total.shape[0])

    def select(self, index) -> Evaluated:
        """The rows ``index`` (a slice, index tensor or mask) of every field."""
        return Evaluated(self.total[index], self.valid[index], {k: v[index] for k, v in self.terms.items()})


@runtime_checkable
class Objective(Protocol):
    """Scores a batch of parameter sets of ``space``; lower is better (docs/fitting.md).

    ``theta`` is (B, P) raw parameters (float64). ``keys`` (B,) int64 are optional sample ids that key
    independent noise (results then do not depend on batching); ``generation`` keys the common random
    numbers of a generation (:func:`pmfm.evaluate.costs.crn_seed`). Objectives that have no noise ignore both.
    """

    space: ParamSpace

    def __call__(
        self, theta: torch.Tensor, *, keys: torch.Tensor | None = None, generation: int = 0
    ) -> Evaluated: ...


class SimulatorObjective:
    """The simulator as an objective: each set simulated ``repeats`` times and costed (docs/cost.md).

    Args:
        space: the parameter space (parametric or regional) of ``theta``.
        data: the empirical split the costs are computed against (its SC drives the simulations).
        simulator: protocol, integrator, precision and device (its own ``noise`` mode is not used:
            the noise is chosen here).
        repeats: R, simulations averaged per set before costing (Kong2021 training: 3).
        seed: noise seed.
        variant: cost variant (Kong2021 by default).
        common_noise: common random numbers per generation (True, Kong2021) or independent noise
            keyed by sample ids (False), as :func:`pmfm.evaluate.costs.repeat_noise` says.
        keep_stats: the terms also hold each set's statistics, ``fc_z`` (B, E) and ``fcd_levels``
            (B, L) (:mod:`pmfm.cost.stats`; zeros for an infeasible set).
        target_of: with ``data`` a list of targets sharing one SC, ``target_of(keys)`` (B,) says
            which target each set is costed against (a multi-target search: one batch, many fits).

    Infeasible sets (out of bounds, NaN) are not simulated: every term is ``variant.invalid_value``
    and ``valid`` is False. Terms of invalid repeats follow the "fit" stage (10; FIC: 5,
    docs/cost.md#repeats-and-validity). FIC runs whose mean rates leave the band are invalid
    repeats; the terms then also hold ``n_valid_rate`` (B,) and ``mean_rate`` (B, N).
    """

    def __init__(
        self,
        space: ParamSpace,
        data,
        simulator,
        *,
        repeats: int = 3,
        seed: int = 0,
        variant: CostVariant = KONG2021,
        common_noise: bool = True,
        keep_stats: bool = False,
        target_of=None,
    ):
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.space = space
        self.data = data
        self.simulator = simulator
        self.repeats = int(repeats)
        self.seed = int(seed)
        self.variant = variant
        self.common_noise = bool(common_noise)
        self.keep_stats = bool(keep_stats)
        self.target_of = target_of

    @torch.no_grad()
    def __call__(
        self, theta: torch.Tensor, *, keys: torch.Tensor | None = None, generation: int = 0
    ) -> Evaluated:
        """Cost (B, P) raw parameters; see the class docstring."""
        theta = torch.as_tensor(theta, dtype=torch.float64)
        theta = theta[None] if theta.ndim == 1 else theta
        n_sets = theta.shape[0]
        if not self.common_noise and keys is None:
            raise ValueError("independent noise (common_noise=False) needs the sample ids `keys`")
        if keys is not None and len(keys) != n_sets:
            raise ValueError(f"{len(keys)} keys for {n_sets} parameter sets")
        bad = float(self.variant.invalid_value)
        terms = {
            "fc_cost": torch.full((n_sets,), bad, dtype=torch.float64),
            "fc_l1": torch.full((n_sets,), bad, dtype=torch.float64),
            "ks": torch.full((n_sets,), bad, dtype=torch.float64),
            "n_valid_fc": torch.zeros(n_sets, dtype=torch.int64),
            "n_valid_fcd": torch.zeros(n_sets, dtype=torch.int64),
        }
        if self.keep_stats:  # zeros for the sets that are not simulated
            n_edges = self.space.n_regions * (self.space.n_regions - 1) // 2
            terms["fc_z"] = torch.zeros((n_sets, n_edges), dtype=FC_Z_DTYPE)
            terms["fcd_levels"] = torch.zeros((n_sets, N_LEVELS), dtype=torch.int32)
        feasible = self.space.is_feasible(theta).cpu()  # (B,)
        rows = torch.nonzero(feasible).flatten()  # infeasible sets are not simulated
        if len(rows):
            evaluation = evaluate_params(
                theta[rows], self.space, self.data, self.simulator,
                repeats=self.repeats, seed=self.seed, variant=self.variant, stage="fit",
                common=self.common_noise, generation=generation if self.common_noise else None,
                sample_ids=None if self.common_noise else torch.as_tensor(keys, dtype=torch.int64)[rows],
                keep_set_stats=self.keep_stats,
                target_index=None if self.target_of is None else self.target_of(keys)[rows],
            )  # fmt: skip
            costs = evaluation.costs
            for name in TERM_NAMES:
                terms[name][rows] = getattr(costs, name).to(terms[name].dtype)
            if costs.mean_rate is not None and costs.n_valid_rate is not None:  # FIC: rates and validity
                terms["mean_rate"] = torch.full(
                    (n_sets, costs.mean_rate.shape[1]), float("nan"), dtype=torch.float64
                )
                terms["mean_rate"][rows] = costs.mean_rate
                terms["n_valid_rate"] = torch.zeros(n_sets, dtype=torch.int64)
                terms["n_valid_rate"][rows] = costs.n_valid_rate
            if evaluation.set_stats is not None:
                terms["fc_z"][rows] = evaluation.set_stats.fc_z
                terms["fcd_levels"][rows] = evaluation.set_stats.fcd_levels
        valid = feasible & (terms["n_valid_fc"] > 0) & (terms["n_valid_fcd"] > 0)
        valid &= (terms["fc_cost"] < bad) & (terms["ks"] < bad)
        total = terms["fc_cost"] + terms["ks"] + (terms["fc_l1"] if self.variant.use_l1 else 0.0)  # (B,)
        if self.variant.use_l1:
            valid &= terms["fc_l1"] < bad
        return Evaluated(total=total, valid=valid, terms=terms)


class FunctionObjective:
    """A plain torch function as an objective, for tests and analytic problems.

    ``fn(theta)`` maps (B, P) float64 to (B,) values (lower is better); with ``with_context=True`` it is
    called as ``fn(theta, keys=keys, generation=generation)``. Non-finite values are replaced by
    ``invalid_total`` and flagged invalid. The function sees every row it is given, feasible or not.
    """

    def __init__(
        self,
        space,
        fn: Callable[..., torch.Tensor],
        *,
        with_context: bool = False,
        invalid_total: float = 1e10,
    ):
        if not math.isfinite(invalid_total):
            raise ValueError(f"invalid_total must be finite, got {invalid_total}")
        self.space = space
        self.fn = fn
        self.with_context = with_context
        self.invalid_total = float(invalid_total)

    def __call__(
        self, theta: torch.Tensor, *, keys: torch.Tensor | None = None, generation: int = 0
    ) -> Evaluated:
        """Evaluate ``fn`` on (B, P) parameters."""
        theta = torch.as_tensor(theta, dtype=torch.float64)
        theta = theta[None] if theta.ndim == 1 else theta
        if self.with_context:
            values = self.fn(theta, keys=keys, generation=generation)
        else:
            values = self.fn(theta)
        values = torch.as_tensor(values, dtype=torch.float64).flatten().cpu()  # (B,)
        if values.shape[0] != theta.shape[0]:
            raise ValueError(f"fn returned {values.shape[0]} values for {theta.shape[0]} parameter sets")
        valid = torch.isfinite(values)
        total = torch.where(valid, values, torch.full_like(values, self.invalid_total))
        return Evaluated(total=total, valid=valid, terms={})
