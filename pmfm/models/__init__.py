"""Surrogates of the simulator: validity and cost terms from normalised parameters (SPEC section 8).

`SurrogateModule` is the LightningModule (loss, metrics, ``predict``); the networks it wraps live in
`pmfm.models.networks`; `pmfm.models.metrics` scores ranking quality near the optimum.
"""

from pmfm.models.metrics import auroc, pearson, rankdata, spearman, surrogate_report, top_k_recall
from pmfm.models.module import COST_RANGES, SurrogateModule

__all__ = [
    "COST_RANGES",
    "SurrogateModule",
    "auroc",
    "pearson",
    "rankdata",
    "spearman",
    "surrogate_report",
    "top_k_recall",
]
