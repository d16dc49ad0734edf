"""The one evaluation path: parameters -> simulated statistics -> costs, chunked and memory-bounded,
with one noise-key scheme (``repeat_noise``); the objective interface every searcher talks to; and
Kong2021's validation and selection rules (docs/fitting.md)."""

from pmfm.evaluate.costs import CRN_STRIDE, Evaluation, crn_seed, evaluate_params, repeat_noise
from pmfm.evaluate.objective import Evaluated, FunctionObjective, Objective, SimulatorObjective
from pmfm.evaluate.selection import (
    DIVERSITY_THRESHOLD,
    choose_diverse,
    grouped_costs,
    map_correlations,
    mean_and_se,
    validate,
)

__all__ = [
    "CRN_STRIDE",
    "DIVERSITY_THRESHOLD",
    "Evaluated",
    "Evaluation",
    "FunctionObjective",
    "Objective",
    "SimulatorObjective",
    "choose_diverse",
    "crn_seed",
    "evaluate_params",
    "grouped_costs",
    "map_correlations",
    "mean_and_se",
    "repeat_noise",
    "validate",
]
