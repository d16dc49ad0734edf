"""Model comparison: surrogate networks side by side on one dataset, over seeds.

A thin wrapper around the two commands a user would type: ``python -m pmfm.train -m
model=<models> seed=<seeds>`` (a Hydra multirun, one run folder per model and seed, in
``<run folder>/train``) and ``pmfm.compare`` on that folder (comparison.csv, comparison.png). It
adds each trained network's evaluations/s (median of timed batches on this device) and states which
model wins on ``study.rank_by`` and by how much against the seed spread.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from pmfm.benchmark import median_time
from pmfm.sim.simulator import resolve_device
from pmfm.studies.report import markdown_table, provenance, write_summary, write_table

METRICS = ("test/spearman", "test/spearman_top10", "test/top5_recall", "test/mae_fc_cost", "test/mae_ks")


def train_sweep(models, seeds, overrides, sweep_dir: Path) -> None:
    """``python -m pmfm.train -m model=... seed=...`` into ``sweep_dir`` (a subprocess: Hydra multirun)."""
    cmd = [
        sys.executable,
        "-m",
        "pmfm.train",
        "-m",
        f"model={','.join(models)}",
        f"seed={','.join(str(s) for s in seeds)}",
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
    ]
    print("running:", " ".join(cmd[1:]), flush=True)
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pmfm.train multirun failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def evaluations_per_s(run: Path, batch: int, device: torch.device, repeats: int = 3) -> float:
    """Predictions/s of a run's trained surrogate (last checkpoint) on ``batch`` random inputs."""
    from pmfm.models import SurrogateModule

    model = SurrogateModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location=device)
    u = torch.rand(batch, len(model.box), device=device, generator=torch.Generator(device).manual_seed(0))
    model.predict_normalised(u[:8])  # warm-up
    seconds, _ = median_time(partial(model.predict_normalised, u), device, repeats)
    return batch / seconds


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Train every model x seed, compare, time the networks, name the winner."""
    from pmfm.compare import compare

    s = cfg.study
    sweep_dir = out_dir / "train"
    device = resolve_device(cfg.device)
    train_sweep(list(s.models), list(s.seeds), list(s.train_overrides), sweep_dir)
    compared = compare(sweep_dir, s.rank_by)
    rows = []
    for r in compared:
        model = re.search(r"model=(\S+)", r["label"])
        rows.append(
            {
                "model": model.group(1) if model else r["label"],
                "seed": r["seed"],
                "run": r["run"],
                **{m: r[m] for m in METRICS},
                "evals_per_s": evaluations_per_s(sweep_dir / r["run"], int(s.eval_batch), device),
            }
        )
    rows.sort(key=lambda r: (r["model"], str(r["seed"])))
    write_table(rows, out_dir / "results.csv")
    if (sweep_dir / "comparison.png").is_file():
        shutil.copy(sweep_dir / "comparison.png", out_dir / "comparison.png")

    per_model = []
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        entry: dict = {"model": name, "seeds": len(mine)}
        for m in (*METRICS, "evals_per_s"):
            values = np.array([r[m] for r in mine], dtype=float)
            entry[f"{m} mean"] = float(np.nanmean(values))
            entry[f"{m} sd"] = float(np.nanstd(values, ddof=1)) if len(values) > 1 else float("nan")
        per_model.append(entry)
    key = f"{s.rank_by} mean"
    lower_better = "mae" in s.rank_by
    per_model.sort(key=lambda e: e[key] if lower_better else -e[key])
    best = per_model[0]
    conclusion = [
        f"{len(per_model)} models x {len(s.seeds)} seeds trained with the same overrides "
        f"({' '.join(s.train_overrides) or 'defaults'}); metrics on the test split (held-out CMA-ES runs).",
        *[
            f"{e['model']}: {s.rank_by} {e[key]:.3f} +- {e[f'{s.rank_by} sd']:.3f}, spearman_top10 "
            f"{e['test/spearman_top10 mean']:.3f} +- {e['test/spearman_top10 sd']:.3f}, top5_recall "
            f"{e['test/top5_recall mean']:.3f}, {e['evals_per_s mean']:.3g} evaluations/s"
            for e in per_model
        ],
    ]
    if len(per_model) > 1:
        second = per_model[1]
        margin = abs(best[key] - second[key])
        spread = np.nanmax([best[f"{s.rank_by} sd"], second[f"{s.rank_by} sd"]])
        verdict = "larger" if margin > spread else "not larger"
        conclusion.append(
            f"Winner on {s.rank_by}: {best['model']}, by {margin:.3f} over {second['model']}; the margin is "
            f"{verdict} than the seed spread (sd up to {spread:.3f})."
        )
    if cfg.plot:
        plot(rows, s.rank_by, out_dir / "models.png")
    summary = {
        "study": "model_comparison",
        "rank_by": s.rank_by,
        "winner": best["model"],
        "per_model": per_model,
        "provenance": provenance(device),
    }
    cols = [
        "model",
        "seeds",
        key,
        f"{s.rank_by} sd",
        "test/spearman_top10 mean",
        "test/top5_recall mean",
        "test/mae_fc_cost mean",
        "test/mae_ks mean",
        "evals_per_s mean",
    ]
    return write_summary(out_dir, "Model comparison", summary, conclusion, markdown_table(per_model, cols))


def plot(rows: list[dict], rank_by: str, path: Path) -> None:
    """Per model: each seed's value of three metrics, and evaluations/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    shown = [rank_by, "test/spearman_top10", "test/top5_recall", "evals_per_s"]
    shown = list(dict.fromkeys(shown))
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.6))
    for ax, metric in zip(axes, shown, strict=True):
        for i, name in enumerate(models):
            values = [r[metric] for r in rows if r["model"] == name]
            ax.scatter([i] * len(values), values, color=f"C{i}")
            ax.errorbar(i, np.nanmean(values), yerr=np.nanstd(values), color="k", capsize=4)
        ax.set_xticks(range(len(models)), models, rotation=25, fontsize=8)
        ax.set_title(metric, fontsize=9)
        if metric == "evals_per_s":
            ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
