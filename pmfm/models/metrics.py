"""How well a surrogate ranks parameter sets, the quantity search depends on (docs/surrogates.md).

Pearson, Spearman (average ranks for ties), the AUROC and the MAE come from torchmetrics; the
within-best-10% correlations and the top-k recall are small functions of their own. All take 1-D
tensors, compute in float64 on the CPU and return a Python float, NaN where the quantity is
undefined (fewer than two samples, a constant or non-finite input, one class absent). Lower cost is
better throughout: the "best" samples are those with the lowest total.

These are functions of whole tensors: under DDP, ``SurrogateModule`` gathers the split's
predictions from every process first, so the figures are those of the whole split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torchmetrics.functional import mean_absolute_error, pearson_corrcoef, spearman_corrcoef
from torchmetrics.functional.classification import binary_auroc

TOP_FRACTION = 0.10  # "near the optimum": the best 10% of samples by simulated total
RECALL_FRACTIONS = {"top1_recall": 0.01, "top5_recall": 0.05}


def _vector(x) -> torch.Tensor:
    return torch.as_tensor(x).detach().reshape(-1).to(device="cpu", dtype=torch.float64)


def _pair(a, b, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Both as float64 vectors, or None where a correlation is undefined."""
    a, b = _vector(a), _vector(b)
    if a.numel() != b.numel():
        raise ValueError(f"{name}: lengths differ ({a.numel()} vs {b.numel()})")
    if a.numel() < 2 or not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return None
    if a.min() == a.max() or b.min() == b.max():  # constant
        return None
    return a, b


def pearson(a, b) -> float:
    """Pearson correlation of two equal-length vectors (torchmetrics)."""
    pair = _pair(a, b, "pearson")
    return math.nan if pair is None else float(pearson_corrcoef(*pair))


def spearman(a, b) -> float:
    """Spearman rank correlation, ties given their average rank (torchmetrics)."""
    pair = _pair(a, b, "spearman")
    return math.nan if pair is None else float(spearman_corrcoef(*pair))


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for boolean ``labels``, a tie counting half (torchmetrics)."""
    scores = _vector(scores)
    labels = torch.as_tensor(labels).detach().reshape(-1).to("cpu").bool()
    if scores.numel() != labels.numel():
        raise ValueError(f"auroc: lengths differ ({scores.numel()} vs {labels.numel()})")
    if labels.all() or not labels.any() or not torch.isfinite(scores).all():
        return math.nan
    lo, hi = scores.min(), scores.max()
    if lo < 0 or hi > 1:  # torchmetrics would read them as logits; a rescale keeps the order
        scores = (scores - lo) / (hi - lo) if hi > lo else torch.zeros_like(scores)
    return float(binary_auroc(scores, labels.long()))


def top_k_recall(pred, true, frac: float) -> float:
    """Of the truly best (lowest) ``frac`` share of samples, the share also predicted best.

    k = max(1, round(frac * n)) on both sides; ties are broken by position (stable sort).
    """
    pred, true = _vector(pred), _vector(true)
    n = true.numel()
    if pred.numel() != n:
        raise ValueError(f"top_k_recall: lengths differ ({pred.numel()} vs {n})")
    if n == 0:
        return math.nan
    k = max(1, round(frac * n))
    best_true = torch.argsort(true, stable=True)[:k]
    best_pred = torch.argsort(pred, stable=True)[:k]
    return float(torch.isin(best_true, best_pred).sum()) / k


def surrogate_report(pred: Mapping[str, torch.Tensor], true: Mapping[str, torch.Tensor], valid) -> dict:
    """Accuracy and ranking quality of predictions against simulated values.

    ``pred`` holds (N,) predictions ("total", each cost term, optionally "p_valid"), ``true`` the
    simulated values of the same keys and ``valid`` (N,) bool. Cost metrics use the valid rows whose
    simulated value is finite. Returns:

    - ``mae_<key>`` for every key of ``true`` also in ``pred`` (except "valid");
    - over the total: ``pearson``, ``spearman``; the same within the best 10% of samples by simulated
      total (``pearson_top10``, ``spearman_top10``); ``top1_recall`` and ``top5_recall``;
    - ``auroc_valid``: p_valid against validity over all rows (NaN unless both classes occur).
    """
    valid = torch.as_tensor(valid).detach().reshape(-1).to("cpu").bool()
    out: dict[str, float] = {}
    for key in true:
        if key == "valid" or key not in pred:
            continue
        p, t = _vector(pred[key]), _vector(true[key])
        keep = valid & torch.isfinite(t)
        out[f"mae_{key}"] = float(mean_absolute_error(p[keep], t[keep])) if keep.any() else math.nan
    if "total" in pred and "total" in true:
        p, t = _vector(pred["total"]), _vector(true["total"])
        keep = valid & torch.isfinite(t)
        p, t = p[keep], t[keep]
        out["pearson"], out["spearman"] = pearson(p, t), spearman(p, t)
        best = torch.argsort(t, stable=True)[: max(1, round(TOP_FRACTION * t.numel()))]
        out["pearson_top10"], out["spearman_top10"] = pearson(p[best], t[best]), spearman(p[best], t[best])
        for name, frac in RECALL_FRACTIONS.items():
            out[name] = top_k_recall(p, t, frac)
    if "p_valid" in pred:
        out["auroc_valid"] = auroc(pred["p_valid"], valid)
    return out
