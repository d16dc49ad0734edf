"""``python -m pmfm.train model=mlp``: train a surrogate of the simulator's validity and cost.

    python -m pmfm.train                          # the recommended MLP on the shipped dataset (CPU, minutes)
    python -m pmfm.train model=transformer logger=csv
    python -m pmfm.train -m model=mlp,transformer,gnn seed=1,2,3   # then python -m pmfm.compare <folder>
    python -m pmfm.train -m hparams_search=optuna
    python -m pmfm.train trainer=ddp trainer.devices=4
    python -m pmfm.train ckpt_path=outputs/train/<run>/checkpoints/last.ckpt   # resume
    python -m pmfm.train model=emulator dataset=bank   # the emulator of a bank's statistics

A missing dataset is generated first (``dataset=...``). Writes checkpoints/, pred_vs_sim.png and
metrics.json to the run folder and returns ``optimized_metric`` for Hydra's sweepers.
"""

import math

import hydra
from omegaconf import DictConfig

from pmfm.pipelines.config import exit_on_user_error, run_folder
from pmfm.pipelines.emulator import train_emulator
from pmfm.pipelines.train import train_surrogate


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    out_dir = run_folder()
    train = train_emulator if cfg.model.network == "emulator" else train_surrogate
    metrics = exit_on_user_error(train, cfg, out_dir, cfg.ckpt_path)
    name = cfg.optimized_metric
    if name not in metrics and train is train_emulator:  # no val/spearman: the held-out cost ranking
        name = next((k for k in metrics if k.endswith("/cost_spearman_mean")), name)
    value = metrics.get(name, math.nan)
    if name in metrics:
        print(f"{name} = {value:.4f}  (run folder: {out_dir})")
    else:  # every row trained on (datamodule.split=[1,0,0]): nothing held out to score
        print(f"{name}: not measured, no held-out rows  (run folder: {out_dir})")
    return value


if __name__ == "__main__":
    main()
