"""Search comparison: CMA-ES, projected Adam and CMA-ES with the ensemble's uncertainty penalty
(``mean + k * std``) against the same surrogate, from the same starts.

Each searcher (``study.arms``: name -> ``search`` settings) returns its ``study.top_k`` diverse
candidates; all of them are then simulated at the surrogate dataset's R on the training split with
the same noise streams (common random numbers: a paired comparison). Reported per searcher: the
simulated (not predicted) cost of what it found, the share of invalid simulations, and how far
predicted and simulated totals disagree.

The surrogate is ``study.ckpt`` or an ensemble trained here with pmfm.train's pipeline (``study.train``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from pmfm.datasets.store import load_dataset
from pmfm.evaluate import evaluate_params
from pmfm.models import SurrogateModule
from pmfm.models.metrics import spearman
from pmfm.params import ParamSpace
from pmfm.pipelines.config import ConfigError, load_data, simulator_of, variant_of
from pmfm.pipelines.folders import dataset_folder
from pmfm.pipelines.progress import progress_bar
from pmfm.pipelines.train import train_surrogate
from pmfm.plots import plt
from pmfm.search.runner import SearchSettings, dataset_starts, start_points, surrogate_search
from pmfm.studies.configs import sub_config
from pmfm.studies.report import markdown_table, provenance, write_summary, write_table


def surrogate(cfg: DictConfig, out_dir: Path):
    """``study.ckpt``, or an ensemble trained on the study's dataset (pmfm.train's pipeline, here)."""
    ckpt = cfg.study.ckpt
    if not ckpt:
        train_surrogate(sub_config("train", cfg, cfg.study.train), out_dir / "surrogate")
        ckpt = out_dir / "surrogate" / "checkpoints" / "last.ckpt"
    return SurrogateModule.load_from_checkpoint(ckpt, map_location="cpu"), str(ckpt)


def search_starts(cfg: DictConfig, space: ParamSpace) -> torch.Tensor:
    """(S, P) the starts every searcher shares: the dataset's best diverse samples or random ones."""
    s = cfg.study
    if s.starts_from == "random":
        return start_points(space, int(cfg.seed), range(int(s.n_starts)))
    if s.starts_from != "dataset":
        raise ConfigError(f"study.starts_from={s.starts_from!r}; expected 'dataset' or 'random'")
    folder = dataset_folder(sub_config("train", cfg, s.train))
    return dataset_starts(load_dataset(folder), space, int(s.n_starts))


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Search with every arm from the same starts, re-simulate every candidate, compare."""
    s = cfg.study
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    data = load_data(cfg.data, simulator, variant)
    space = simulator.param_space(data)
    model, ckpt = surrogate(cfg, out_dir)
    starts = search_starts(cfg, space)
    found, wall = {}, {}
    for name, arm in s.arms.items():
        tic = time.perf_counter()
        found[name] = surrogate_search(
            model,
            space,
            SearchSettings.from_config(arm),
            n_starts=len(starts),
            top_k=int(s.top_k),
            seed=int(cfg.seed),
            starts=starts,
        )
        wall[name] = time.perf_counter() - tic
    theta = torch.cat([f.theta for f in found.values()])  # (sum K, P)
    common = dataclasses.replace(simulator, noise="common")  # every candidate sees the same R streams
    with progress_bar(len(theta) * int(s.repeats), "search_comparison", enabled=cfg.progress) as bar:
        costs = evaluate_params(theta, space, data, common, repeats=int(s.repeats), seed=int(cfg.seed),
                                variant=variant, progress=bar.update).costs  # fmt: skip
    sim_total, valid = costs.total.numpy(), costs.n_valid().numpy() > 0

    rows, per_arm, at = [], [], 0
    for name, outcome in found.items():
        k = len(outcome.theta)
        pred = outcome.predicted
        std = pred.get("total_std", np.full(k, np.nan))
        sim, ok = sim_total[at : at + k], valid[at : at + k]
        for i in range(k):
            rows.append(
                {
                    "arm": name,
                    "rank": i + 1,
                    "start": int(outcome.start[i]),
                    "step": int(outcome.step[i]),
                    "predicted_total": float(pred["total"][i]),
                    "predicted_std": float(std[i]),
                    "p_valid": float(pred["p_valid"][i]),
                    "simulated_total": float(sim[i]),
                    "simulated_fc_cost": float(costs.fc_cost[at + i]),
                    "simulated_ks": float(costs.ks[at + i]),
                    "valid": bool(ok[i]),
                    "abs_error": float(abs(pred["total"][i] - sim[i])),
                }
            )
        err = np.abs(pred["total"] - sim)[ok]
        per_arm.append(
            {
                "arm": name,
                "candidates": k,
                "best_simulated": float(sim[ok].min()) if ok.any() else np.nan,
                "median_simulated": float(np.median(sim[ok])) if ok.any() else np.nan,
                "best_predicted": float(pred["total"].min()),
                "invalid_share": float(1 - ok.mean()),
                "mean_abs_pred_error": float(err.mean()) if len(err) else np.nan,
                "spearman_pred_sim": spearman(torch.tensor(pred["total"][ok]), torch.tensor(sim[ok]))
                if ok.sum() > 2
                else np.nan,
                "mean_predicted_std": float(np.nanmean(std)) if np.isfinite(std).any() else np.nan,
                "surrogate_evaluations": int(outcome.evaluations),
                "search_wall_s": wall[name],
            }
        )
        at += k
    write_table(rows, out_dir / "results.csv")
    if cfg.plot:
        plot(rows, out_dir / "pred_vs_sim.png", int(s.repeats))
    best = min(per_arm, key=lambda a: a["best_simulated"] if np.isfinite(a["best_simulated"]) else np.inf)
    conclusion = [
        f"Surrogate {ckpt}; {len(starts)} shared starts ({s.starts_from}); top {s.top_k} diverse "
        f"candidates per searcher simulated at R = {s.repeats} ({simulator.protocol.n_tr} TRs), "
        "the same noise for all.",
        *[
            f"{a['arm']}: best simulated {a['best_simulated']:.4f} "
            f"(predicted best {a['best_predicted']:.4f}), "
            f"median {a['median_simulated']:.4f}, invalid {100 * a['invalid_share']:.0f}%, mean |predicted - "
            f"simulated| {a['mean_abs_pred_error']:.4f}, Spearman(pred, sim) {a['spearman_pred_sim']:.2f}"
            for a in per_arm
        ],
        f"Lowest simulated cost: {best['arm']} ({best['best_simulated']:.4f}).",
    ]
    summary = {
        "study": "search_comparison",
        "surrogate": ckpt,
        "repeats": int(s.repeats),
        "n_starts": len(starts),
        "arms": per_arm,
        "best_arm": best["arm"],
        "provenance": provenance(simulator.device),
    }
    cols = [
        "arm",
        "best_simulated",
        "median_simulated",
        "best_predicted",
        "invalid_share",
        "mean_abs_pred_error",
        "spearman_pred_sim",
        "mean_predicted_std",
    ]
    return write_summary(out_dir, "Search comparison", summary, conclusion, markdown_table(per_arm, cols))


def plot(rows: list[dict], path: Path, repeats: int) -> None:
    """Predicted against simulated total of every candidate, one colour per searcher."""

    fig, ax = plt.subplots(figsize=(5.5, 5))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    for i, arm in enumerate(arms):
        mine = [r for r in rows if r["arm"] == arm and r["valid"]]
        ax.scatter(
            [r["predicted_total"] for r in mine],
            [r["simulated_total"] for r in mine],
            color=f"C{i}",
            label=f"{arm} ({sum(not r['valid'] for r in rows if r['arm'] == arm)} invalid)",
        )
    values = [r[k] for r in rows if r["valid"] for k in ("predicted_total", "simulated_total")]
    if values:
        lo, hi = min(values), max(values)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("predicted total")
    ax.set_ylabel(f"simulated total (R = {repeats})")
    ax.legend(fontsize=8)
    ax.set_title("What each searcher found: predicted vs simulated")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
