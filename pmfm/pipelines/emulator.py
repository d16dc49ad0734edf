"""Train the emulator of a bank's statistics (``python -m pmfm.train model=emulator dataset=bank``).

A missing bank is made first. After training, the held-out rows (the test split, else val) are
costed against every target of ``targets.path`` (default: the bank's own ``targets/``) twice, from
their stored statistics and from the emulated ones; the Spearman correlation of the two totals per
target goes to metrics.json as ``test/cost_spearman/<target>`` (docs/emulator.md). The surrogate's
search callback scores one target's cost and is not run here.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
import wandb
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from pmfm.cost import CostVariant
from pmfm.cost.stats import cost_from_stats
from pmfm.data.checks import fcd_pair_count
from pmfm.data.targets import Target, find_targets, is_target
from pmfm.datasets.bank import Bank, bank_stats, fingerprint
from pmfm.datasets.bank_datamodule import BankDataModule
from pmfm.datasets.store import atomic_write_json
from pmfm.models.emulator import EmulatorModule, emulated_costs
from pmfm.models.metrics import spearman
from pmfm.pipelines.config import fill_run_values, load_data, simulator_of, variant_of
from pmfm.pipelines.dataset import make_dataset
from pmfm.pipelines.folders import dataset_folder

log = logging.getLogger(__name__)


def train_emulator(cfg: DictConfig, out_dir: Path, ckpt_path: str | None = None) -> dict[str, float]:
    """Seed, bank, model, callbacks, trainer, fit, test, cost agreement per target; the metrics."""
    L.seed_everything(cfg.seed, workers=True)
    fill_run_values(cfg, out_dir)
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    data = load_data(cfg.data, simulator, variant)
    space = simulator.param_space(data)
    folder = dataset_folder(cfg, simulator)
    datamodule = BankDataModule(
        space,
        folder,
        n_bins=variant.n_bins,
        split=tuple(cfg.datamodule.split),
        split_seed=cfg.datamodule.split_seed,
        test_groups=list(cfg.datamodule.get("test_groups") or []),
        batch_size=cfg.datamodule.batch_size,
        generate=functools.partial(make_dataset, cfg, out_dir),
    )
    datamodule.prepare_data()
    Bank(folder).check(fingerprint(data, simulator, variant), "this run's simulator and data")
    datamodule.setup()
    log.info("bank %s, split groups: %s", folder, datamodule.split_groups)
    fcd_total = fcd_pair_count(simulator.protocol.n_tr, variant.window)
    epochs = cfg.trainer.get("max_epochs")
    model = build_emulator(cfg.model, datamodule, data, space.box.tolist(), fcd_total, epochs)
    if cfg.get("search_callback") and cfg.search_callback.enabled:
        log.info("search_callback: searches a one-target cost surrogate; skipped for the emulator")
    has_val = len(datamodule.split_index["val"]) > 0
    checkpoint_on_val(cfg, has_val)
    loggers = [hydra.utils.instantiate(c) for c in (cfg.logger or {}).values()]
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.callbacks or {}).values()]
    try:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        trainer = hydra.utils.instantiate(
            cfg.trainer,
            logger=loggers or False,
            callbacks=callbacks,
            default_root_dir=str(out_dir),
            **({} if has_val else {"limit_val_batches": 0}),  # nothing held out: no validation loop
        )
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        best = next((c.best_model_path for c in callbacks if getattr(c, "monitor", None)), "")
        held = "test" if len(datamodule.split_index["test"]) else "val"
        if held == "test":
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        if best:
            model = EmulatorModule.load_from_checkpoint(best, map_location="cpu")
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        targets = checked_targets(cfg.get("targets", {}).get("path"), folder)
        agreement = cost_agreement(model, datamodule, held, targets, variant, fcd_total)
        metrics |= {f"{held}/cost_spearman/{name}": value for name, value in agreement.items()}
        if agreement:
            metrics[f"{held}/cost_spearman_mean"] = float(np.nanmean(list(agreement.values())))
        atomic_write_json(out_dir / "metrics.json", metrics)
        print(
            agreement_table(agreement, held, len(datamodule.split_index[held]), datamodule.split_groups[held])
        )
        return metrics
    finally:
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                wandb.finish()


def build_emulator(model_cfg: DictConfig, datamodule: BankDataModule, data, box, fcd_total: int, epochs):
    """The emulator of the model config on the bank's ``data`` (basis, SC), its FC basis and input
    statistics filled from the train split."""
    basis, sc = data.basis().tolist(), data.sc.tolist()
    rows = datamodule.load()
    train = datamodule.split_index["train"]
    hp = {k: model_cfg[k] for k in ("rank", "n_knots", "hidden", "depth", "lr", "weight_decay")}
    hp["network"] = model_cfg.get("trunk", "mlp")
    hp |= {k: model_cfg[k] for k in ("fc_weight", "fcd_weight", "validity_weight")}
    model = EmulatorModule(
        n_params=len(box),
        n_edges=int(rows["fc_z"].shape[1]),
        n_bins=datamodule.n_bins,
        fcd_total=fcd_total,
        repeats=int(rows["repeats"].max(initial=1)),
        box=box,
        network_hparams=dict(model_cfg.get("network_hparams") or {}),
        basis=basis,
        sc=sc,
        max_epochs_hint=int(epochs or 300),
        **hp,
    )
    valid = train[rows["n_valid_fc"][train] > 0]
    model.set_fc_basis(torch.from_numpy(rows["fc_z"][valid].astype(np.float32)))
    model.set_input_statistics(datamodule.dataset("train")[:]["x"])
    return model


def checkpoint_on_val(cfg: DictConfig, has_val: bool) -> None:
    """The best-epoch checkpoint watches val/loss (the emulator has no val/spearman); without a val
    split it is dropped (last.ckpt, the final epoch, stays)."""
    callbacks = cfg.get("callbacks")
    if not isinstance(callbacks, DictConfig) or "model_checkpoint" not in callbacks:
        return
    with open_dict(callbacks):
        if has_val:
            callbacks.model_checkpoint.monitor, callbacks.model_checkpoint.mode = "val/loss", "min"
        else:
            del callbacks["model_checkpoint"]


def checked_targets(path: str | None, bank: Path) -> list[Target]:
    """The targets at ``path``, or every target folder under the bank's ``targets/`` (none: [])."""
    if path:
        return find_targets(path)
    root = bank / "targets"
    folders = sorted(p for p in root.rglob("*") if p.is_dir() and is_target(p)) if root.is_dir() else []
    return [find_targets(p)[0] for p in folders]


def cost_agreement(
    module: EmulatorModule,
    datamodule: BankDataModule,
    split: str,
    targets: list[Target],
    variant: CostVariant,
    fcd_total: int,
) -> dict[str, float]:
    """Per target, the Spearman correlation over a split's rows of the emulated total cost and the
    total from the rows' stored statistics (both by cost_from_stats)."""
    index = datamodule.split_index[split]
    if not len(index):  # trained on every row (datamodule.split=[1,0,0]): nothing held out to rank
        return {}
    rows = {k: v[index] for k, v in datamodule.load().items()}
    stored = bank_stats(rows, fcd_total)
    u = datamodule.dataset(split)[:]["x"]
    out = {}
    for target in targets:
        emp = target.load("train", window=variant.window, n_bins=variant.n_bins)
        if emp.n_regions * (emp.n_regions - 1) // 2 != stored.fc_z.shape[1]:
            log.warning("target %s: %d regions, not the bank's; skipped", target.name, emp.n_regions)
            continue
        true = cost_from_stats(stored, emp.fc, emp.fcd_cdf, variant, "fit").total
        pred = emulated_costs(module, u, emp.fc, emp.fcd_cdf, variant, "fit").total
        out[target.name] = spearman(pred, true)
    return out


def agreement_table(agreement: dict[str, float], split: str, n_rows: int, groups: list[str]) -> str:
    if not n_rows:
        return "every row trained on: no held-out row to rank (datamodule.split)"
    where = f"{n_rows} {split} rows ({', '.join(groups)})"
    lines = [f"emulated vs stored-statistics total cost, Spearman over {where}:"]
    lines += [f"  {name:<24} {value:.3f}" for name, value in agreement.items()]
    if not agreement:
        lines.append("  no target (targets.path=<folder of targets>)")
    return "\n".join(lines)


def train_on_bank(
    rows: dict[str, np.ndarray], space, data, variant: CostVariant, fcd_total: int, model_cfg: DictConfig, *,
    epochs: int, seed: int, save_to: Path, batch_size: int = 64, progress: bool = True,
) -> None:  # fmt: skip
    """An emulator trained on every one of a bank's loaded ``rows`` (no held-out split), as
    ``python -m pmfm.train model=emulator`` would build it, saved as the checkpoint ``save_to``
    (atomically); for a fit that has no checkpoint."""
    L.seed_everything(seed, workers=True)
    split = (1.0, 0.0, 0.0)
    datamodule = BankDataModule(
        space, rows=rows, n_bins=variant.n_bins, split=split, split_seed=seed, batch_size=batch_size
    )
    datamodule.setup()
    model = build_emulator(model_cfg, datamodule, data, space.box.tolist(), fcd_total, epochs)
    trainer = L.Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=progress,
        enable_model_summary=False, limit_val_batches=0, deterministic=True, accelerator="auto",
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    tmp = save_to.with_name(save_to.name + ".tmp")
    trainer.save_checkpoint(tmp)
    tmp.replace(save_to)
