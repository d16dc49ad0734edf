"""Searchers over the parameter space: Kong2021's multi-start CMA-ES (pycma), projected gradient
descent, surrogate pre-screening, search against a surrogate and the Lightning callback that runs
it after training (docs/fitting.md)."""

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

__all__ = [
    "BestOfGeneration",
    "CMAESSettings",
    "GenerationResult",
    "KongCSA",
    "MultiStartCMAES",
    "StartGeneration",
    "chi_n",
    "kong_constants",
    "kong_stds",
]
