"""Leave-one-CMA-ES-run-out: how well does a surrogate config rank runs it never saw?

pmfm.train's test split holds out one run of the shipped dataset (160 samples): its Spearman carries
a standard error of a few hundredths. Here each run is held out in turn (the ``model`` group trained
as pmfm.train trains it, on the other runs), and the pooled and per-run metrics are written to
surrogate_cv.json, against the noise ceiling with ``study.fresh`` (docs/surrogates.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from pmfm.datasets import load_dataset
from pmfm.datasets.datamodule import RowsDataset, encode
from pmfm.models import SurrogateModule
from pmfm.models.metrics import spearman, surrogate_report
from pmfm.pipelines.config import ConfigError, load_data, simulator_of, variant_of
from pmfm.pipelines.progress import progress_bar
from pmfm.pipelines.train import data_hparams, input_statistics
from pmfm.studies.report import command, write_json
from pmfm.studies.sets import dataset_or_shipped

OUTPUTS = ("valid", "fc_cost", "ks")


class _Rows(L.LightningDataModule):
    """Just a training loader over in-memory rows (input_statistics reads ``dataset("train").x``)."""

    def __init__(self, rows: RowsDataset, batch_size: int):
        super().__init__()
        self.rows, self.batch_size, self.streaming = rows, batch_size, False

    def prepare_data(self):
        pass

    def setup(self, stage=None):
        pass

    def dataset(self, split: str) -> RowsDataset:
        return self.rows

    def train_dataloader(self):
        return DataLoader(self.rows, batch_size=self.batch_size, shuffle=True)


class _RankedSurrogate(SurrogateModule):
    """SurrogateModule plus a pairwise ranking loss on the total (RankNet): for every pair of valid rows
    in a batch, softplus(-sign(t_i - t_j) (p_i - p_j) / temperature), averaged, times ``rank_weight``."""

    rank_weight, rank_temperature = 0.0, 0.02

    def losses(self, z, batch):
        out = super().losses(z, batch)
        if self.rank_weight == 0:
            return out
        valid = self.valid_target(batch)
        target = batch["y"][:, self.term_columns].to(z.dtype)  # (B, T)
        valid = valid & torch.isfinite(target).all(1)
        pred = self.heads(z)["total"][..., valid]  # (..., V)
        true = target[valid].sum(1)  # (V,)
        order = torch.sign(true[:, None] - true[None, :])  # (V, V)
        rank = F.softplus(-order * (pred[..., :, None] - pred[..., None, :]) / self.rank_temperature)
        rank = (rank * order.abs()).sum((-2, -1)) / order.abs().sum().clamp(min=1)
        out["loss"] = out["loss"] + self.rank_weight * rank.sum()
        return out


def model_label(model_cfg: DictConfig) -> str:
    """'mlp (linearised)': the network and, for the MLPs, its features."""
    features = model_cfg.network_hparams.get("features")
    return f"{model_cfg.network} ({features})" if features else str(model_cfg.network)


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Hold out every run of the dataset in turn; pooled and per-run metrics (and ceilings)."""
    s = cfg.study
    torch.set_num_threads(1)  # as the recorded runs: one thread is fastest for these small networks
    epochs = int(s.epochs or compose("train").trainer.max_epochs)
    simulator = simulator_of(cfg)
    data = load_data(cfg.data, simulator, variant_of(cfg, simulator))
    space = simulator.param_space(data)
    folder = dataset_or_shipped(s.dataset)
    rows = load_dataset(folder)
    batch = encode(rows, space, OUTPUTS)
    runs = rows["start"]
    geometry = {"box": space.box.tolist(), "basis": data.basis().tolist(), "sc": data.sc.tolist()}
    model_cfg = cfg.model
    extra = data_hparams(model_cfg, data)
    pred = torch.full((len(runs),), float("nan"), dtype=torch.float64)
    settings = json.dumps([folder.name, OmegaConf.to_container(model_cfg, resolve=True), epochs,
                           int(cfg.seed), float(s.rank_weight), float(s.rank_temperature)])  # fmt: skip
    if s.predictions and Path(s.predictions).is_file():
        saved = np.load(s.predictions)
        made = str(saved["settings"]) if "settings" in saved.files else "unrecorded settings"
        if made != settings:
            raise ConfigError(f"{s.predictions} holds predictions of {made}, not {settings}")
        pred = torch.from_numpy(saved["total"])
    todo: list = np.unique(runs).tolist() if pred.isnan().all() else []
    with progress_bar(len(todo), "surrogate_cv", unit="run", enabled=cfg.progress) as bar:
        for run_id in todo:
            held = torch.from_numpy(runs == run_id)
            pred[held] = held_out_prediction(cfg, batch, ~held, geometry, extra, epochs)
            within = spearman(pred[held], torch.from_numpy(rows["total"][held.numpy()]))
            print(f"run {run_id}: {int(held.sum())} samples, Spearman {within:.3f}")
            bar.update(1)
    if s.predictions:
        np.savez(s.predictions, total=pred.numpy(), settings=settings)
    true = {"fc_cost": batch["y"][:, 1], "ks": batch["y"][:, 2]}
    true["total"] = true["fc_cost"] + true["ks"]
    report = surrogate_report({"total": pred}, true, batch["valid"])
    per_run = {
        int(r): spearman(pred[torch.from_numpy(runs == r)], true["total"][torch.from_numpy(runs == r)])
        for r in np.unique(runs)
    }
    result = {
        "model": model_label(model_cfg), "command": command(), "dataset": str(folder), "samples": len(runs),
        "runs": len(per_run), "epochs": epochs, "rank_weight": float(s.rank_weight),
        "rank_temperature": float(s.rank_temperature), "pooled": report, "spearman_within_run": per_run,
        "spearman_within_run_mean": float(np.mean(list(per_run.values()))),
    }  # fmt: skip
    if s.fresh:
        fresh = np.load(s.fresh)["total"]
        result["pooled_ceiling"] = surrogate_report({"total": torch.from_numpy(fresh)}, true, batch["valid"])
        result |= per_run_against_ceiling(pred, true, batch["valid"], runs, fresh)
    write_json(result, out_dir / "surrogate_cv.json", s.out)
    print(json.dumps({k: v for k, v in result.items() if k != "spearman_within_run"}, indent=2))
    return result


def held_out_prediction(cfg: DictConfig, batch: dict, train: torch.Tensor, geometry, extra, epochs: int):
    """The model config trained on the ``train`` rows; its predicted totals of the other rows (float64)."""
    s, model_cfg = cfg.study, cfg.model
    L.seed_everything(int(cfg.seed), workers=True)
    loader = _Rows(
        RowsDataset(batch["x"][train], batch["y"][train], batch["valid"][train]), int(s.batch_size)
    )
    hparams = dict(model_cfg.network_hparams) | extra
    hparams |= input_statistics(model_cfg, loader, geometry, extra)
    module = _RankedSurrogate(
        network=model_cfg.network, network_hparams=hparams, terms=["fc_cost", "ks"],
        output_names=list(OUTPUTS), lr=model_cfg.lr, weight_decay=model_cfg.weight_decay,
        max_epochs_hint=epochs, **geometry,
    )  # fmt: skip
    module.rank_weight, module.rank_temperature = float(s.rank_weight), float(s.rank_temperature)
    trainer = L.Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, accelerator="cpu", deterministic=True,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=loader.train_dataloader())
    return module.predict_normalised(batch["x"][~train])["total"].double()


def per_run_against_ceiling(pred, true, valid, runs, fresh) -> dict:
    """Each held-out run: the surrogate's report and the noise ceiling's (fresh re-simulation as the
    prediction), on the same rows and the same best 10%; the means over runs."""
    keys = ("spearman", "spearman_top10", "top5_recall")
    per_run = {}
    for r in np.unique(runs):
        m = torch.from_numpy(runs == r)
        t = {k: v[m] for k, v in true.items()}
        model = surrogate_report({"total": pred[m]}, t, valid[m])
        ceiling = surrogate_report({"total": torch.from_numpy(fresh)[m]}, t, valid[m])
        per_run[int(r)] = {k: model[k] for k in keys} | {f"ceiling_{k}": ceiling[k] for k in keys}
        print(f"run {r}: " + ", ".join(f"{k} {model[k]:.3f} (ceiling {ceiling[k]:.3f})" for k in keys))
    mean = {k: float(np.mean([v[k] for v in per_run.values()])) for k in next(iter(per_run.values()))}
    mean["share_of_ceiling_top10"] = mean["spearman_top10"] / mean["ceiling_spearman_top10"]
    return {"per_run": per_run, "per_run_mean": mean}
