"""How well can any surrogate rank held-out samples? The noise ceiling, and a checkpoint against it.

A cost at R = 3 is itself noisy, so the Spearman of a dataset's stored totals with a fresh
re-simulation of the same sets bounds what a surrogate, which sees only the parameters, can reach
(docs/surrogates.md). Computed on the test split (split by CMA-ES run, as pmfm.train splits), overall
and within the best 10%, beside a checkpoint's Spearman (surrogate_ceiling.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from pmfm.datasets import PMFMDataModule, load_dataset
from pmfm.datasets.datamodule import group_keys, group_label
from pmfm.evaluate import evaluate_params
from pmfm.models import SurrogateModule
from pmfm.models.metrics import spearman
from pmfm.pipelines.config import ConfigError, load_data, simulator_of, variant_of
from pmfm.pipelines.progress import progress_bar
from pmfm.studies.report import write_json
from pmfm.studies.sets import dataset_or_shipped


def top10(total: np.ndarray) -> np.ndarray:
    return total <= np.quantile(total, 0.10)


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """The ceiling on the test split, or one part of it (``study.part``); with ``study.resimulate_all``
    every row of the dataset re-simulated into a .npz that ``study.fresh`` (here and in
    ``study=surrogate_cv``) reuses anywhere."""
    s = cfg.study
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    data = load_data(cfg.data, simulator, variant)
    space = simulator.param_space(data)
    folder = dataset_or_shipped(s.dataset)

    def resimulate(theta, seed: int, what: str) -> np.ndarray:
        with progress_bar(len(theta) * int(s.repeats), what, enabled=cfg.progress) as bar:
            return evaluate_params(theta, space, data, simulator, repeats=int(s.repeats), seed=seed,
                                   variant=variant, progress=bar.update).costs.total.numpy()  # fmt: skip

    if s.resimulate_all:
        rows = load_dataset(folder)
        again = resimulate(torch.as_tensor(rows["theta"]), int(s.seed), "every row")
        np.savez(s.resimulate_all, total=again, stored=rows["total"], method=simulator.resolved_method)
        ok = np.isfinite(again) & np.isfinite(rows["total"])
        rho = float(spearman(torch.tensor(rows["total"][ok]), torch.tensor(again[ok])))
        print(f"{len(again)} rows re-simulated on {simulator.device} ({simulator.resolved_method}): "
              f"Spearman {rho:.3f}")  # fmt: skip
        return {"rows": len(again), "spearman": rho}

    dm = PMFMDataModule(folder, space, split=tuple(s.split), split_seed=int(s.split_seed))
    dm.setup("test")
    rows = load_dataset(folder)
    labels = np.array([group_label(int(k)) for k in group_keys(rows["start"], rows["shard"])])
    groups = set(dm.split_groups["test"])
    test = np.isin(labels, list(groups)) & (rows["n_valid_fc"] > 0) & (rows["n_valid_fcd"] > 0)
    theta = torch.as_tensor(rows["theta"][test])
    stored = rows["total"][test]
    print(f"test split: {len(groups)} group(s), {int(test.sum())} valid samples")
    parts = np.array_split(np.arange(len(theta)), int(s.parts))
    part_file = Path(s.parts_folder or out_dir) / "surrogate_ceiling"
    if s.part is not None:  # re-simulate one part and stop
        part = int(s.part)
        part_file.parent.mkdir(parents=True, exist_ok=True)
        np.save(
            f"{part_file}_part{part}.npy", resimulate(theta[parts[part]], int(s.seed) + part, f"part {part}")
        )
        return {}
    if s.fresh:
        fresh = np.load(s.fresh)["total"]  # (N,) every row of the dataset
        if len(fresh) != len(rows["total"]):
            raise ConfigError(
                f"study.fresh={s.fresh}: {len(fresh)} rows, the dataset has {len(rows['total'])}"
            )
        again = fresh[test]
    elif s.combine:
        again = np.concatenate([np.load(f"{part_file}_part{i}.npy") for i in range(int(s.parts))])
    else:
        again = resimulate(theta, int(s.seed), "test split")
    best = top10(stored)
    result = {
        "n_test": int(test.sum()),
        "ceiling_spearman": float(spearman(torch.tensor(stored), torch.tensor(again))),
        "ceiling_spearman_top10": float(spearman(torch.tensor(stored[best]), torch.tensor(again[best]))),
    }
    if s.ckpt:
        model = SurrogateModule.load_from_checkpoint(s.ckpt, map_location="cpu")
        pred = model.predict(theta)["total"].numpy()
        result["surrogate_spearman"] = float(spearman(torch.tensor(stored), torch.tensor(pred)))
        result["surrogate_spearman_top10"] = float(
            spearman(torch.tensor(stored[best]), torch.tensor(pred[best]))
        )
        result["share_of_ceiling_top10"] = (
            result["surrogate_spearman_top10"] / result["ceiling_spearman_top10"]
        )
    write_json(result, out_dir / "surrogate_ceiling.json", s.out)
    print(json.dumps(result, indent=2))
    return result
