"""The inputs of the strategies that use a surrogate: its dataset (reused or generated), the trained
surrogate (a reused checkpoint, or trained here) and where a surrogate search starts."""

from __future__ import annotations

import json
import time
from pathlib import Path

from omegaconf import DictConfig

from pmfm.datasets import load_dataset
from pmfm.models import SurrogateModule
from pmfm.params import ParamSpace
from pmfm.pipelines.dataset import make_dataset
from pmfm.pipelines.fit.state import RunState
from pmfm.pipelines.folders import dataset_folder
from pmfm.pipelines.train import train_surrogate
from pmfm.search.runner import dataset_starts


def prepare_surrogate(cfg: DictConfig, out_dir: Path, state: RunState):
    """The dataset (reused or generated) and the surrogate (reused ``strategy.ckpt`` or trained)."""
    if cfg.strategy.ckpt:
        if not state.has("surrogate"):
            state.save("surrogate", {"ckpt": str(cfg.strategy.ckpt)})
            state.record(
                "surrogate",
                wall_s=0.0,
                note=f"reused {cfg.strategy.ckpt}; its dataset and training not counted",
            )
        return SurrogateModule.load_from_checkpoint(cfg.strategy.ckpt, map_location="cpu")
    folder = dataset_folder(cfg)
    if not state.has("dataset"):
        manifest_path = folder / "manifest.json"
        reused = manifest_path.is_file() and json.loads(manifest_path.read_text()).get("complete")
        tic = time.perf_counter()
        if not reused:
            make_dataset(cfg, out_dir)
        manifest = json.loads(manifest_path.read_text())
        sims = int(manifest["counts"]["rows"]) * int(manifest["config"]["dataset"]["repeats"])
        note = (
            f"reused {folder} (made before this run: its wall time is not included)"
            if reused
            else f"generated {folder}"
        )
        state.record(
            "dataset", wall_s=0.0 if reused else time.perf_counter() - tic, simulations=sims, note=note
        )
        state.save("dataset", {"folder": str(folder), "simulations": sims})
    if not state.has("surrogate"):
        tic = time.perf_counter()
        train_dir = out_dir / "surrogate"
        last = train_dir / "checkpoints" / "last.ckpt"
        train_surrogate(cfg, train_dir, str(last) if last.is_file() else None)  # a killed training resumes
        best = sorted((train_dir / "checkpoints").glob("epoch*.ckpt"))
        ckpt = best[-1] if best else last
        state.record(
            "surrogate", wall_s=time.perf_counter() - tic, note=f"trained {cfg.model.network}: {ckpt}"
        )
        state.save("surrogate", {"ckpt": str(ckpt)})
    return SurrogateModule.load_from_checkpoint(state.load("surrogate")["ckpt"], map_location="cpu")


def search_starts(cfg: DictConfig, space: ParamSpace):
    """None (random starts) or, with ``strategy.starts_from=dataset``, the dataset's best samples."""
    how = cfg.strategy.get("starts_from", "random")
    if how == "random":
        return None
    if how != "dataset":
        raise ValueError(f"strategy.starts_from={how!r}; expected 'random' or 'dataset'")
    return dataset_starts(load_dataset(dataset_folder(cfg)), space, cfg.search.n_starts)
