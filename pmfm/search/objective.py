"""What a searcher minimises: a batch of parameter sets in, one total cost per set out.

Every searcher in :mod:`pmfm.search` talks to an :class:`Objective`: it hands over the whole
population of a generation, (B, P) raw parameters of ``objective.space``, in one call, and gets back
an :class:`Evaluated` with one total per set (lower is better, always finite), a validity flag and
the cost terms. Two objectives ship here:

- :class:`SimulatorObjective`: the real pMFM, each set simulated R times and costed against the
  empirical FC / FCD (SPEC sections 6 and 7), in memory-bounded chunks.
- :class:`FunctionObjective`: a plain torch function, for tests and analytic problems.

Noise of the simulator objective (SPEC section 7, "common random numbers"):

- ``common_noise=True`` (Kong2021): within one call, repeat r of every candidate uses the same stream
  r, so candidates are compared under identical noise. Each generation gets fresh streams: the noise
  seed of a call is :func:`crn_seed` ``(seed, generation) = seed * CRN_STRIDE + generation``, with
  ``CRN_STRIDE = 1_000_003`` (a prime) and ``0 <= generation < CRN_STRIDE``. The map is one-to-one on
  that range: two (seed, generation) pairs give the same noise seed only if they are equal, so no two
  generations of one run, and no two runs with different seeds, share noise. The noise seed then
  goes through SplitMix64 (``pmfm.sim.noise.stream_base``), so neighbouring seeds give unrelated
  streams.
- ``common_noise=False``: independent noise keyed by sample ids, ``keys`` (B,): repeat r of sample k
  uses stream ``k * repeats + r`` under ``seed``. A sample's result then depends only on its id, never
  on how the samples were batched or on which call evaluated them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from pmfm.cost import KONG2021, CostVariant, combine_repeats
from pmfm.evaluate import rate_summary, sims_per_chunk, simulation_stats
from pmfm.params import ParamSpace
from pmfm.sim.noise import Noise

CRN_STRIDE = 1_000_003  # prime > any generation count: seed * CRN_STRIDE + generation is one-to-one
TERM_NAMES = ("fc_cost", "fc_l1", "ks", "n_valid_fc", "n_valid_fcd")


def crn_seed(seed: int, generation: int) -> int:
    """Noise seed of generation ``generation`` under ``seed`` (common random numbers, SPEC section 7).

    ``seed * CRN_STRIDE + generation``: distinct for distinct pairs with ``0 <= generation <
    CRN_STRIDE`` (any integer seed), so every generation of every run gets its own streams.
    """
    if not 0 <= generation < CRN_STRIDE:
        raise ValueError(f"generation must be in [0, {CRN_STRIDE}), got {generation}")
    return int(seed) * CRN_STRIDE + int(generation)


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
    """Scores a batch of parameter sets of ``space``; lower is better (SPEC section 7).

    ``theta`` is (B, P) raw parameters (float64). ``keys`` (B,) int64 are optional sample ids that key
    independent noise (results then do not depend on batching); ``generation`` keys the common random
    numbers of a generation (:func:`crn_seed`). Objectives that have no noise ignore both.
    """

    space: ParamSpace

    def __call__(
        self, theta: torch.Tensor, *, keys: torch.Tensor | None = None, generation: int = 0
    ) -> Evaluated: ...


class SimulatorObjective:
    """The pMFM as an objective: each set simulated ``repeats`` times and costed (SPEC sections 6, 7).

    Args:
        space: the parameter space (parametric or regional) of ``theta``.
        data: the empirical split the costs are computed against (its SC drives the simulations).
        simulator: protocol, integrator, precision and device (its own ``noise`` mode is not used:
            the noise is chosen here).
        repeats: R, simulations averaged per set before costing (Kong2021 training: 3).
        seed: noise seed.
        variant: cost variant (Kong2021 by default).
        common_noise: common random numbers per generation (True, Kong2021) or independent noise
            keyed by sample ids (False); see the module docstring.

    Infeasible sets (out of bounds, NaN) are not simulated: every term is ``variant.invalid_value``
    and ``valid`` is False. Terms of invalid repeats follow the "fit" stage of SPEC section 6 (10;
    FIC: 5). FIC runs whose mean rates leave the band are invalid repeats; the terms then also hold
    ``n_valid_rate`` (B,) and ``mean_rate`` (B, N).
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

    def noise(self, n_sets: int, *, keys: torch.Tensor | None = None, generation: int = 0) -> Noise:
        """Noise for ``n_sets`` sets x ``repeats`` repeats, set-major (row i*R + r: set i, repeat r)."""
        r = self.repeats
        if self.common_noise:
            return Noise.common(crn_seed(self.seed, generation), torch.arange(r).repeat(n_sets))
        if keys is None:
            raise ValueError("independent noise (common_noise=False) needs the sample ids `keys`")
        keys = torch.as_tensor(keys, dtype=torch.int64).flatten()
        if len(keys) != n_sets:
            raise ValueError(f"{len(keys)} keys for {n_sets} parameter sets")
        return Noise.independent(self.seed, (keys[:, None] * r + torch.arange(r)).flatten())

    @torch.no_grad()
    def __call__(
        self, theta: torch.Tensor, *, keys: torch.Tensor | None = None, generation: int = 0
    ) -> Evaluated:
        """Cost (B, P) raw parameters; see the class docstring."""
        theta = torch.as_tensor(theta, dtype=torch.float64)
        theta = theta[None] if theta.ndim == 1 else theta
        n_sets, r = theta.shape[0], self.repeats
        bad = float(self.variant.invalid_value)
        terms = {
            "fc_cost": torch.full((n_sets,), bad, dtype=torch.float64),
            "fc_l1": torch.full((n_sets,), bad, dtype=torch.float64),
            "ks": torch.full((n_sets,), bad, dtype=torch.float64),
            "n_valid_fc": torch.zeros(n_sets, dtype=torch.int64),
            "n_valid_fcd": torch.zeros(n_sets, dtype=torch.int64),
        }
        noise = self.noise(n_sets, keys=keys, generation=generation)  # (B * R,) streams, set-major
        all_keys = noise.resolved_keys(n_sets * r).reshape(n_sets, r)  # (B, R)
        feasible = self.space.is_feasible(theta).cpu()  # (B,)
        rows = torch.nonzero(feasible).flatten()
        per_sim = sims_per_chunk(self.simulator, self.space.n_regions, self.variant.n_bins)
        per_chunk = max(1, per_sim // r)  # sets per chunk: bounds the BOLD kept
        for start in range(0, len(rows), per_chunk):
            idx = rows[start : start + per_chunk]  # (b,)
            chunk_noise = Noise(seed=noise.seed, keys=all_keys[idx].flatten(), mode=noise.mode)
            result = self.simulator.run(
                theta[idx].repeat_interleave(r, dim=0), self.space, self.data.sc, chunk_noise
            )  # bold (b * R, N, T)
            stats = simulation_stats(result, self.variant, self.simulator)
            costs = combine_repeats(stats, self.data.fc, self.data.fcd_cdf, r, self.variant, "fit")
            for name in TERM_NAMES:
                terms[name][idx] = getattr(costs, name).to(terms[name].dtype)
            for name, values in rate_summary(result, r, self.simulator).items():  # FIC: rates and validity
                if name not in terms:
                    fill = 0 if name == "n_valid_rate" else float("nan")
                    terms[name] = torch.full((n_sets, *values.shape[1:]), fill, dtype=values.dtype)
                terms[name][idx] = values
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
