"""``python -m pmfm.predict ckpt=... params_csv=...``: score parameter sets with a trained surrogate.

    python -m pmfm.predict ckpt=outputs/train/<run>/checkpoints/last.ckpt params_csv=sets.csv
    python -m pmfm.predict ckpt=... params_csv=... condition.path=/data/grp condition.split=vali

Writes predictions.csv (one row per set: fc_cost, ks, total, p_valid, ...) to the run folder.
"""

import hydra
from omegaconf import DictConfig

from pmfm.pipelines.config import exit_on_user_error, run_folder
from pmfm.pipelines.predict import predict_table


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(predict_table, cfg, run_folder())


if __name__ == "__main__":
    main()
