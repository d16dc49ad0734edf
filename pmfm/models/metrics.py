"""How well a surrogate ranks parameter sets, the quantity search depends on (SPEC section 8).

Plain torch, computed in float64 on 1-D tensors; each function returns a Python float, NaN where
the quantity is undefined (fewer than two samples, a constant input, one class absent). Lower cost
is better throughout: the "best" samples are those with the lowest total.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

TOP_FRACTION = 0.10  # "near the optimum": the best 10% of samples by simulated total
RECALL_FRACTIONS = {"top1_recall": 0.01, "top5_recall": 0.05}


def _vector(x) -> torch.Tensor:
    return torch.as_tensor(x).detach().reshape(-1).to(device="cpu", dtype=torch.float64)


def rankdata(x) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, ties given their average rank (scipy.stats.rankdata's default)."""
    x = _vector(x)
    values, order = torch.sort(x, stable=True)
    _, inverse, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts  # 0-based position of each tie group's first member
    average = first.to(torch.float64) + (counts.to(torch.float64) + 1) / 2  # (groups,)
    ranks = torch.empty_like(x)
    ranks[order] = average[inverse]
    return ranks


def pearson(a, b) -> float:
    """Pearson correlation of two equal-length vectors."""
    a, b = _vector(a), _vector(b)
    if a.numel() != b.numel():
        raise ValueError(f"pearson: lengths differ ({a.numel()} vs {b.numel()})")
    if a.numel() < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    denom = torch.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else math.nan


def spearman(a, b) -> float:
    """Spearman rank correlation (Pearson of average ranks)."""
    return pearson(rankdata(a), rankdata(b))


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


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for boolean ``labels`` (Mann-Whitney U, ties averaged)."""
    scores = _vector(scores)
    labels = torch.as_tensor(labels).detach().reshape(-1).to("cpu").bool()
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores)
    u = float(ranks[labels].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


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
        out[f"mae_{key}"] = float((p[keep] - t[keep]).abs().mean()) if keep.any() else math.nan
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
