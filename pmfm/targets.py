"""``python -m pmfm.targets``: make fit targets, one folder per subject (docs/data.md#targets-from-bold).

    python -m pmfm.targets bold=/data/cohort out=outputs/targets/cohort   # <cohort>/<subject>/<run files>
    python -m pmfm.targets bold=/data/cohort n_tr=150 tr_s=0.8 splits='{train: 1, vali: 1}'
    python -m pmfm.targets synthetic=10 out=outputs/targets/synthetic    # known truths, 4 + 4 runs each
    python -m pmfm.targets synthetic=4 protocol=short synthetic_truth.from_dataset=0

Each target folder holds sc_/fc_/fcd_<split> files, the covariates and target.json (TR, run length,
the runs averaged); a synthetic subject also truth.csv and truth_maps.csv. Fit them with
``python -m pmfm.fit targets.path=<folder>`` (each at its runs' TR and length).
"""

import hydra
from omegaconf import DictConfig

from pmfm.pipelines.config import exit_on_user_error, run_folder
from pmfm.pipelines.targets import make_targets


@hydra.main(version_base="1.3", config_path="conf", config_name="targets")
def main(cfg: DictConfig) -> int:
    return len(exit_on_user_error(make_targets, cfg, run_folder()))


if __name__ == "__main__":
    main()
