"""``python -m pmfm.simulate``: simulate parameter sets, print their costs, save what they made.

    python -m pmfm.simulate                                 # Kong2021 example set 1, R = 3
    python -m pmfm.simulate example=3 repeats=10 simulator.dtype=float64
    python -m pmfm.simulate params_csv=sets.csv repeats=3   # many sets -> costs.csv
    python -m pmfm.simulate params_csv=outputs/fit/<run>/results.csv params_layout=test_all
    python -m pmfm.simulate data=folder data.path=/my/data data.split=test

Writes costs.csv, bold.npz, fc.npy, fcd_cdf.npy and fc_fcd.png to the run folder.
"""

import hydra
from omegaconf import DictConfig

from pmfm.pipelines.config import exit_on_user_error, run_folder
from pmfm.pipelines.simulate import simulate_sets


@hydra.main(version_base="1.3", config_path="conf", config_name="simulate")
def main(cfg: DictConfig) -> float:
    return exit_on_user_error(simulate_sets, cfg, run_folder())


if __name__ == "__main__":
    main()
