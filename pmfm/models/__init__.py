"""Surrogates of the simulator: validity and cost terms from normalised parameters (docs/surrogates.md).

``SurrogateModule`` is the LightningModule (loss, metrics, ``predict``) around a plain network of
``pmfm.models.networks``; ``pmfm.models.metrics`` scores ranking quality near the optimum.
"""

from pmfm.models.metrics import auroc, pearson, spearman, surrogate_report, top_k_recall
from pmfm.models.module import COST_RANGES, SurrogateModule

__all__ = [
    "COST_RANGES",
    "SurrogateModule",
    "auroc",
    "pearson",
    "spearman",
    "surrogate_report",
    "top_k_recall",
]
