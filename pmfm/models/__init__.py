"""Surrogates of the simulator: validity and cost terms from normalised parameters (SPEC section 8).

`SurrogateModule` is the LightningModule (loss, metrics, ``predict``); the networks it wraps live in
`pmfm.models.networks`; `pmfm.models.metrics` scores ranking quality near the optimum.
"""

from pmfm.models.metrics import auroc, pearson, rankdata, spearman, surrogate_report, top_k_recall


def __getattr__(name: str):
    """SurrogateModule needs Lightning; the networks and metrics do not (bare GPU machines)."""
    if name in ("SurrogateModule", "COST_RANGES"):
        from pmfm.models import module

        return getattr(module, name)
    raise AttributeError(name)


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
