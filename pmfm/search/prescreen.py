"""Surrogate pre-screening: the simulator-in-the-loop CMA-ES, with the surrogate choosing what is simulated.

Every generation each start still samples its full population (Kong2021: 500). The surrogate scores
all of them; only each start's ``simulate_top`` best-scored sets are simulated (R repeats, common
random numbers, exactly as the simulator strategy). The others are told to CMA-ES behind every
simulated set, in the surrogate's order, so with ``mu <= simulate_top`` the parents, the kept best
of each generation and every reported cost come from simulations only: no claim rests on the
surrogate, it only decides where the simulations go.

    objective = PrescreenedObjective(simulator_objective, surrogate_objective,
                                     group_size=500, simulate_top=100)
    MultiStartCMAES(objective, starts, CMAESSettings(popsize=500, mu=40), seed=1)
"""

from __future__ import annotations

import torch

from pmfm.evaluate.objective import Evaluated, Objective

UNSIMULATED_GAP = 1.0  # unsimulated set's total: its start's worst simulated total + this + its score rank


class PrescreenedObjective:
    """``simulator`` on the ``simulate_top`` sets of every block of ``group_size`` that ``surrogate``
    scores lowest; the rest ranked behind them (see the module docstring).

    ``theta`` arrives as consecutive blocks of ``group_size`` (one start's population each, as
    :class:`~pmfm.search.cmaes.MultiStartCMAES` batches them); the term ``simulated`` (B,) marks
    the simulated sets. Counts: ``simulated_sets`` (sets sent to the simulator, each simulated R
    times) and ``scored_sets`` (surrogate evaluations).
    """

    def __init__(self, simulator: Objective, surrogate: Objective, *, group_size: int, simulate_top: int):
        if not 1 <= simulate_top <= group_size:
            raise ValueError(f"need 1 <= simulate_top <= group_size, got {simulate_top}, {group_size}")
        self.space = simulator.space
        self.simulator, self.surrogate = simulator, surrogate
        self.group_size, self.simulate_top = int(group_size), int(simulate_top)
        self.simulated_sets = 0
        self.scored_sets = 0

    @torch.no_grad()
    def __call__(
        self, theta: torch.Tensor, *, keys: torch.Tensor | None = None, generation: int = 0
    ) -> Evaluated:
        """Simulated costs for the chosen sets of each block, surrogate-ordered stand-ins for the rest."""
        theta = torch.as_tensor(theta, dtype=torch.float64)
        n_sets, g = theta.shape[0], self.group_size
        if n_sets % g:
            raise ValueError(f"{n_sets} parameter sets are not whole blocks of group_size={g}")
        score = self.surrogate(theta, keys=keys).total.view(-1, g)  # (S, g), finite (infeasible: large)
        self.scored_sets += n_sets
        order = score.argsort(dim=1, stable=True)  # (S, g) best first
        offsets = torch.arange(0, n_sets, g)[:, None]  # (S, 1)
        chosen = (order[:, : self.simulate_top] + offsets).flatten()  # (S * top,) rows simulated
        sub_keys = None if keys is None else keys[chosen]
        simulated = self.simulator(theta[chosen], keys=sub_keys, generation=generation)
        self.simulated_sets += len(chosen)

        total = torch.empty(n_sets, dtype=torch.float64)
        total[chosen] = simulated.total
        worst = simulated.total.view(-1, self.simulate_top).max(dim=1).values  # (S,) per block
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(g).expand_as(order).contiguous())  # (S, g) score ranks
        stand_in = worst[:, None] + UNSIMULATED_GAP + rank.to(torch.float64)  # (S, g) behind all simulated
        rest = torch.ones(n_sets, dtype=torch.bool)
        rest[chosen] = False
        total[rest] = stand_in.flatten()[rest]
        valid = torch.zeros(n_sets, dtype=torch.bool)
        valid[chosen] = simulated.valid
        terms = {}
        for name, values in simulated.terms.items():  # unsimulated rows: NaN (floats) or 0 (counts)
            fill = 0 if not values.is_floating_point() else float("nan")
            full = torch.full((n_sets, *values.shape[1:]), fill, dtype=values.dtype)
            full[chosen] = values
            terms[name] = full
        terms["simulated"] = ~rest  # (B,) the sets the simulator ran
        return Evaluated(total=total, valid=valid, terms=terms)
