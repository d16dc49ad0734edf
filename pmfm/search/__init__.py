"""Searchers over the pMFM parameter space: objectives and Kong2021's multi-start CMA-ES (SPEC section 7)."""

from pmfm.search.cmaes import (
    BestOfGeneration,
    CMAESSettings,
    GenerationResult,
    KongCSA,
    MultiStartCMAES,
    StartGeneration,
    chi_n,
    kong_constants,
    kong_stds,
)
from pmfm.search.objective import (
    CRN_STRIDE,
    Evaluated,
    FunctionObjective,
    Objective,
    SimulatorObjective,
    crn_seed,
)

__all__ = [
    "CRN_STRIDE",
    "BestOfGeneration",
    "CMAESSettings",
    "Evaluated",
    "FunctionObjective",
    "GenerationResult",
    "KongCSA",
    "MultiStartCMAES",
    "Objective",
    "SimulatorObjective",
    "StartGeneration",
    "chi_n",
    "crn_seed",
    "kong_constants",
    "kong_stds",
]
