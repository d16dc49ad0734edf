"""``python -m pmfm.generate dataset=<strategy>``: simulate parameter sets into a sharded dataset.

    python -m pmfm.generate dataset=sobol                       # CPU demo size
    python -m pmfm.generate dataset=cmaes                       # simulator-in-the-loop CMA-ES runs
    python -m pmfm.generate dataset=around dataset.centers_csv=best.csv
    python -m pmfm.generate -m hydra/launcher=joblib_local dataset.shard_index=0,1   # shards in parallel

The dataset lands in ``<paths.datasets>/<name>_<circuit>_<TRs>tr_r<R>/``; rerunning the same command
skips complete shards and finishes incomplete ones.
"""

import hydra
from omegaconf import DictConfig

from pmfm.pipelines.config import exit_on_user_error, run_folder
from pmfm.pipelines.dataset import make_dataset


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(make_dataset, cfg, run_folder())


if __name__ == "__main__":
    main()
