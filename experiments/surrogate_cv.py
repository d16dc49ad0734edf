"""Leave-one-CMA-ES-run-out: how well does a surrogate config rank runs it never saw?

The default test split of ``pmfm.train`` holds out one run of the shipped dataset (160 samples), so its
Spearman carries a standard error of a few hundredths. Here each of the dataset's runs is held out in
turn: the model config is trained (SurrogateModule, the same loss, optimiser, schedule and epochs as
``pmfm.train``, validation skipped) on the other runs and predicts the held-out one. Printed and
saved: the pooled metrics over all held-out predictions (``surrogate_report``: Spearman overall and
within the best 10%, top-5% recall, MAE) and the Spearman within each run. With ``--fresh`` (a
re-simulation of every row with fresh noise, ``surrogate_ceiling.py --resimulate-all``) the pooled
predictions get the pooled noise ceiling, and each run its own ceiling beside the surrogate's metrics,
with the mean over runs of both.
``--predictions`` reuses the held-out predictions of an earlier run instead of training again.

    python experiments/surrogate_cv.py --model mlp_lna
    python experiments/surrogate_cv.py --model mlp --epochs 60
    python experiments/surrogate_cv.py --model mlp_lna model.network_hparams.hidden=64   # a variant
    python experiments/surrogate_cv.py --model mlp_lna --fresh fresh.npz --predictions cv_pred.npz
    python experiments/surrogate_cv.py --rank-weight 1 --out rank.json   # plus a pairwise ranking loss
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from pmfm.data import load_bundled
from pmfm.datasets import load_dataset
from pmfm.datasets.datamodule import RowsDataset, encode
from pmfm.datasets.generation import BUNDLED_DATASETS
from pmfm.models import SurrogateModule
from pmfm.models.metrics import spearman, surrogate_report
from pmfm.params import ParamSpace
from pmfm.train import data_hparams, input_statistics

CONF = Path(__file__).resolve().parents[1] / "conf"
TARGETS = ("valid", "fc_cost", "ks")


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


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mlp_lna", help="a conf/model config")
    p.add_argument(
        "overrides", nargs="*", help="Hydra overrides of it, e.g. model.network_hparams.hidden=128"
    )
    p.add_argument("--dataset", default=str(BUNDLED_DATASETS / "hcp_cmaes_r3"))
    p.add_argument("--epochs", type=int, default=None, help="default: pmfm.train's trainer.max_epochs")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON (experiments/results/surrogate_cv_<model>.json)")
    p.add_argument("--fresh", default=None, help="the dataset re-simulated (.npz with total (N,))")
    p.add_argument("--predictions", default=None, help=".npz of held-out predictions: reused if present")
    p.add_argument("--rank-weight", type=float, default=0.0, help="weight of a pairwise ranking loss")
    p.add_argument("--rank-temperature", type=float, default=0.02, help="its scale of total differences")
    a = p.parse_args(argv)
    torch.set_num_threads(1)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={a.model}", *a.overrides])
    model_cfg, a.epochs = cfg.model, a.epochs or cfg.trainer.max_epochs
    data = load_bundled("train")
    space = ParamSpace(data.basis())
    rows = load_dataset(a.dataset)
    batch = encode(rows, space, TARGETS)
    runs = rows["start"]
    geometry = {"box": space.box.tolist(), "basis": data.basis().tolist(), "sc": data.sc.tolist()}
    extra = data_hparams(model_cfg, data)
    pred = torch.full((len(runs),), float("nan"), dtype=torch.float64)
    settings = " ".join([Path(a.dataset).name, f"model={a.model}", *a.overrides])
    settings += f" epochs={a.epochs} seed={a.seed} "
    settings += f"rank={a.rank_weight},{a.rank_temperature}"
    if a.predictions and Path(a.predictions).is_file():
        saved = np.load(a.predictions)
        made = str(saved["settings"]) if "settings" in saved.files else "unrecorded settings"
        if made != settings:
            raise SystemExit(f"{a.predictions} holds predictions of {made}, not {settings}")
        pred = torch.from_numpy(saved["total"])
    for run in np.unique(runs) if pred.isnan().all() else []:
        train = torch.from_numpy(runs != run)
        L.seed_everything(a.seed, workers=True)
        rows_train = RowsDataset(batch["x"][train], batch["y"][train], batch["valid"][train])
        loader = _Rows(rows_train, a.batch_size)
        hparams = dict(model_cfg.network_hparams) | extra
        hparams |= input_statistics(model_cfg, loader, geometry, extra)
        module = _RankedSurrogate(
            network=model_cfg.network, network_hparams=hparams, terms=["fc_cost", "ks"],
            target_names=list(TARGETS), lr=model_cfg.lr, weight_decay=model_cfg.weight_decay,
            max_epochs_hint=a.epochs, **geometry,
        )  # fmt: skip
        module.rank_weight, module.rank_temperature = a.rank_weight, a.rank_temperature
        trainer = L.Trainer(
            max_epochs=a.epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, accelerator="cpu", deterministic=True,
        )  # fmt: skip
        trainer.fit(module, train_dataloaders=loader.train_dataloader())
        held = ~train
        pred[held] = module.predict_normalised(batch["x"][held])["total"].double()
        within = spearman(pred[held], torch.from_numpy(rows["total"][held.numpy()]))
        print(f"run {run}: {int(held.sum())} samples, Spearman {within:.3f}")
    if a.predictions:
        np.savez(a.predictions, total=pred.numpy(), settings=settings)
    true = {"fc_cost": batch["y"][:, 1], "ks": batch["y"][:, 2]}
    true["total"] = true["fc_cost"] + true["ks"]
    report = surrogate_report({"total": pred}, true, batch["valid"])
    per_run = {
        int(r): spearman(pred[torch.from_numpy(runs == r)], true["total"][torch.from_numpy(runs == r)])
        for r in np.unique(runs)
    }
    result = {
        "model": a.model, "overrides": a.overrides, "dataset": str(a.dataset), "samples": len(runs),
        "runs": len(per_run),
        "epochs": a.epochs, "rank_weight": a.rank_weight, "rank_temperature": a.rank_temperature,
        "pooled": report, "spearman_within_run": per_run,
        "spearman_within_run_mean": float(np.mean(list(per_run.values()))),
    }  # fmt: skip
    if a.fresh:
        fresh = np.load(a.fresh)["total"]
        result["pooled_ceiling"] = surrogate_report({"total": torch.from_numpy(fresh)}, true, batch["valid"])
        result |= per_run_against_ceiling(pred, true, batch["valid"], runs, fresh)
    out = Path(a.out or f"experiments/results/surrogate_cv_{a.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "spearman_within_run"}, indent=2))
    return result


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


if __name__ == "__main__":
    main()
