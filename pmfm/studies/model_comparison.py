"""Model comparison: surrogate networks side by side on one dataset, over seeds.

Every model x seed is trained with pmfm.train's pipeline in this process, each run in its own
folder under ``<run folder>/train`` holding what a ``python -m pmfm.train -m`` sweep leaves for
``pmfm.compare`` (metrics.json, and the run's settings in .hydra/); ``pmfm.compare`` then tables
them (comparison.csv, comparison.png). Added: each trained network's evaluations/s (median of timed
batches on this device) and which model wins on ``study.rank_by``, by how much against the seed spread.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from pmfm.models import SurrogateModule
from pmfm.pipelines.benchmark import median_time
from pmfm.pipelines.compare import compare
from pmfm.pipelines.progress import progress_bar
from pmfm.pipelines.train import train_surrogate
from pmfm.plots import plt
from pmfm.sim.simulator import resolve_device
from pmfm.studies.configs import overrides_of, plain, sub_config
from pmfm.studies.report import markdown_table, provenance, write_summary, write_table

METRICS = ("test/spearman", "test/spearman_top10", "test/top5_recall", "test/mae_fc_cost", "test/mae_ks")


def model_node(study: DictConfig, model: str) -> dict:
    """``{groups, values}`` of one model: a variant of ``study.variants``, else the model config."""
    variants = plain(study.get("variants"))
    node = variants.get(model) or {"groups": {"model": model}}
    return {"groups": dict(node.get("groups") or {}), "values": dict(node.get("values") or {})}


def train_runs(cfg: DictConfig, sweep_dir: Path) -> dict[str, tuple[str, int]]:
    """Train every model x seed into ``sweep_dir/<model>_seed<seed>``; returns run -> (model, seed)."""
    s = cfg.study
    runs = {}
    with progress_bar(
        len(s.models) * len(s.seeds), "model_comparison", unit="run", enabled=cfg.progress
    ) as bar:
        for model in s.models:
            node = model_node(s, model)
            for seed in s.seeds:
                run = sweep_dir / f"{model}_seed{seed}"
                train_cfg = sub_config("train", cfg, s.train, node, values={"seed": int(seed)})
                record_settings(
                    run, [*overrides_of(node["groups"], node["values"]), f"seed={seed}"], train_cfg
                )
                print(f"training {model}, seed {seed} into {run}", flush=True)
                train_surrogate(train_cfg, run)
                runs[run.name] = (str(model), int(seed))
                bar.update(1)
    return runs


def record_settings(run: Path, overrides: list[str], train_cfg: DictConfig) -> None:
    """The run's settings where a Hydra run keeps them: .hydra/overrides.yaml (the label pmfm.compare
    shows: what differs between the runs) and .hydra/config.yaml (the whole config)."""
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    OmegaConf.save(train_cfg, run / ".hydra" / "config.yaml", resolve=True)


def evaluations_per_s(run: Path, batch: int, device: torch.device, repeats: int = 3) -> float:
    """Predictions/s of a run's trained surrogate (last checkpoint) on ``batch`` random inputs."""
    model = SurrogateModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location=device)
    u = torch.rand(batch, len(model.box), device=device, generator=torch.Generator(device).manual_seed(0))
    model.predict_normalised(u[:8])  # warm-up
    seconds, _ = median_time(partial(model.predict_normalised, u), device, repeats)
    return batch / seconds


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Train every model x seed, compare, time the networks, name the winner."""
    s = cfg.study
    sweep_dir = out_dir / "train"
    device = resolve_device(cfg.device)
    runs = train_runs(cfg, sweep_dir)
    compared = compare(sweep_dir, s.rank_by)
    rows = []
    for r in compared:
        model, seed = runs[r["run"]]
        rows.append(
            {
                "model": model,
                "seed": seed,
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
        f"{len(per_model)} models x {len(s.seeds)} seeds trained with the same settings "
        f"({' '.join(overrides_of(plain(s.train.get('groups')), plain(s.train.get('values'))))}); "
        "metrics on the test split (held-out CMA-ES runs).",
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
