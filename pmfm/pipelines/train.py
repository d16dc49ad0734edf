"""Train a surrogate of the simulator's validity and cost on a dataset (``python -m pmfm.train``).

A missing dataset is generated first. Writes checkpoints/, pred_vs_sim.png and metrics.json to the
run folder; the training callback (``search_callback``) then searches the surrogate and re-simulates
its best candidates.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path

import hydra
import lightning as L
import torch
import wandb
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from pmfm.datasets import DatasetError, PMFMDataModule
from pmfm.models import SurrogateModule
from pmfm.models.conditioning import empirical_condition
from pmfm.models.module import bundled_geometry
from pmfm.models.networks import NETWORKS
from pmfm.pipelines.config import fill_run_values, load_data, simulator_of, variant_of
from pmfm.pipelines.dataset import make_dataset
from pmfm.pipelines.folders import dataset_folder
from pmfm.plots import plot_pred_vs_sim
from pmfm.search.callback import SurrogateSearchCallback
from pmfm.search.runner import SearchSettings

log = logging.getLogger(__name__)


def train_surrogate(cfg: DictConfig, out_dir: Path, ckpt_path: str | None = None) -> dict[str, float]:
    """Seed, data, model, callbacks, trainer, fit, test, report; returns the final metrics.

    ``ckpt_path``: a checkpoint of this run to resume training from.
    """
    L.seed_everything(cfg.seed, workers=True)
    fill_run_values(cfg, out_dir)
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    data = load_data(cfg.data, simulator, variant)
    space = simulator.param_space(data)
    pmfm_features_only(cfg.model, space.circuit)
    outputs = list(cfg.datamodule.outputs)
    if variant.use_l1 and "fc_l1" not in outputs:  # the cost's total has L1 (delssome, fic): learn it
        outputs.append("fc_l1")
        log.info("outputs: fc_l1 added, cost=%s counts it in the total", variant.name)
    terms = [t for t in outputs if t not in ("valid", "total")]  # total = sum of the terms

    folder = dataset_folder(cfg, simulator)
    check_dataset_matches(folder, variant.name, data.n_regions, simulator.circuit)
    datamodule = PMFMDataModule(
        folder,
        space,
        outputs=tuple(outputs),
        split=tuple(cfg.datamodule.split),
        split_seed=cfg.datamodule.split_seed,
        batch_size=cfg.datamodule.batch_size,
        generate=functools.partial(make_dataset, cfg, out_dir),  # picklable (ddp_spawn)
    )
    extra = data_hparams(cfg.model, data)
    geometry = {"box": space.box.tolist(), "basis": data.basis().tolist(), "sc": data.sc.tolist()}
    network_hparams = dict(cfg.model.network_hparams) | extra
    network_hparams |= input_statistics(cfg.model, datamodule, geometry, extra)
    model = SurrogateModule(
        network=cfg.model.network,
        network_hparams=network_hparams,
        terms=terms,
        output_names=outputs,
        **geometry,
        circuit=space.circuit,
        bounds=dataclasses.asdict(space.limits),
        use_l1_in_total=variant.use_l1,
        lr=cfg.model.lr,
        weight_decay=cfg.model.weight_decay,
        max_epochs_hint=cfg.trainer.get("max_epochs") or 100,
    )
    loggers = [hydra.utils.instantiate(c) for c in (cfg.logger or {}).values()]
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.callbacks or {}).values()]
    if cfg.get("search_callback") and cfg.search_callback.enabled:
        callbacks.append(search_callback(cfg, folder, simulator, variant, space, out_dir))
    try:  # from the first logger call on, so that a failing run still finishes its wandb run
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
            if hasattr(logger, "experiment") and hasattr(logger.experiment, "tags"):
                tags = [cfg.model.network, cfg.dataset.name, f"seed{cfg.seed}", *cfg.get("tags", [])]
                logger.experiment.tags = tags
        trainer = hydra.utils.instantiate(
            cfg.trainer, logger=loggers or False, callbacks=callbacks, default_root_dir=str(out_dir)
        )
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics = scalars(trainer.callback_metrics)  # the last validation
        best = "best" if any(getattr(c, "monitor", None) and c.best_model_path for c in callbacks) else None
        trainer.test(model, datamodule=datamodule, ckpt_path=best)
        metrics |= scalars(trainer.callback_metrics)
        if trainer.is_global_zero:
            report(model, metrics, out_dir, loggers, datamodule)
        return metrics
    finally:
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                wandb.finish()


def search_callback(cfg: DictConfig, folder: Path, simulator, variant, space, out_dir: Path):
    """Search the trained surrogate and re-simulate its top-k as the dataset was made (``search=...``)."""
    c = cfg.search_callback
    settings = SearchSettings.from_config(cfg.search)
    return SurrogateSearchCallback.for_dataset(
        folder,
        cfg.data.path,
        simulator,
        space,
        settings,
        variant=variant,
        split=cfg.data.split,
        repeats=cfg.dataset.repeats,
        n_starts=settings.n_starts,
        top_k=c.top_k,
        seed=c.seed,
        every_n_epochs=c.every_n_epochs,
        out_dir=out_dir,
    )


def input_statistics(
    model_cfg: DictConfig, datamodule, geometry: dict | None = None, extra: dict | None = None
) -> dict:
    """Training-split mean and sd of the MLPs' input features (in-memory datasets), as hparams.

    ``geometry``: the network's box, basis and sc (default: the bundled data's); ``extra``: hparams
    filled in at run time (:func:`data_hparams`).
    """
    hparams = dict(model_cfg.network_hparams) | (extra or {})
    member = hparams.pop("member", None) if model_cfg.network == "ensemble" else model_cfg.network
    hparams.pop("k", None)
    if member not in ("mlp", "mlp_lna"):
        return {}
    datamodule.prepare_data()
    datamodule.setup("fit")
    if datamodule.streaming:
        return {}
    geometry = geometry or bundled_geometry()
    network = NETWORKS[member](1, **geometry, **hparams)
    rows = datamodule.dataset("train")
    with torch.no_grad():
        x = network.features(rows.x.float())  # type: ignore[operator]  # (n, F), an MLP's inputs
    return {"input_mean": x.mean(0).tolist(), "input_std": x.std(0).tolist()}


def pmfm_features_only(model_cfg: DictConfig, circuit: str) -> None:
    """The linearised features are the pMFM's: under another circuit, say so and feed the coefficients."""
    hparams = model_cfg.network_hparams
    member = hparams.get("member") if model_cfg.network == "ensemble" else model_cfg.network
    linearised = member == "mlp_lna" or (member == "mlp" and hparams.get("features") == "linearised")
    if circuit == "pmfm" or not linearised:
        return
    log.warning("the linearised features describe the pMFM, not the %s model: the MLP reads the "
                "coefficients instead (model.network_hparams.features=coefficients)", circuit)  # fmt: skip
    with open_dict(model_cfg):
        if model_cfg.network == "ensemble":
            hparams.member = "mlp"
        else:
            model_cfg.network = "mlp"
        hparams.features = "coefficients"
        for key in ("target_fc", "with_coefficients"):
            hparams.pop(key, None)


def data_hparams(model_cfg: DictConfig, data) -> dict:
    """Network hyperparameters a model config leaves to the training data (``auto``).

    ``target_fc: auto`` -> the data's empirical FC (N, N); ``condition: auto`` -> its conditioning
    vector (:func:`pmfm.models.conditioning.empirical_condition`: FC upper triangle, FCD CDF).
    """
    hparams = model_cfg.network_hparams
    out = {}
    if hparams.get("target_fc") == "auto":
        out["target_fc"] = data.fc.tolist()
    if hparams.get("condition") == "auto":
        out["condition"] = empirical_condition(data.fc, data.fcd_cdf).tolist()
    return out


def check_dataset_matches(folder: Path, variant: str, n_regions: int, circuit: str = "pmfm") -> None:
    """Refuse a dataset costed with another variant, made for another parcellation or another
    circuit model (its coefficients would be misread)."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return  # generated first, from this very config
    made = json.loads(manifest.read_text()).get("config", {})
    made_circuit = made.get("circuit", {}).get("name", "pmfm")
    if made_circuit != circuit:
        raise DatasetError(
            f"{manifest}: dataset made with the {made_circuit} model; this run simulates the {circuit} "
            "model. Pick the matching simulator= or another dataset."
        )
    cost, data = made.get("cost", {}).get("variant"), made.get("data", {}).get("n_regions")
    if (cost is not None and cost != variant) or (data is not None and data != n_regions):
        raise DatasetError(
            f"{manifest}: dataset made with cost={cost} on {data} regions; this run uses cost={variant} on "
            f"{n_regions} regions. Pick the matching cost= or another dataset."
        )


def scalars(metrics) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if torch.as_tensor(v).numel() == 1}


def report(model, metrics: dict, out_dir: Path, loggers, datamodule) -> None:
    """metrics.json and the predicted-vs-simulated scatter of the test split (logged as an image)."""
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if model.last_eval is None:
        return
    pred, true, valid = model.last_eval
    shown = [k for k in ("test/spearman", "test/spearman_top10", "test/top5_recall") if k in metrics]
    title = ", ".join(f"{k.split('/')[1]} {metrics[k]:.3f}" for k in shown)
    path = plot_pred_vs_sim(pred, true, valid, out_dir / "pred_vs_sim.png", f"test split: {title}")
    for logger in loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key="test/pred_vs_sim", images=[str(path)])
    log.info("split groups: %s", {k: len(v) for k, v in datamodule.split_groups.items()})
