"""``python -m pmfm.fit strategy=simulator|surrogate|prescreen``: fit the pMFM to data, Kong2021's protocol.

    python -m pmfm.fit                                   # surrogate strategy, bundled HCP data, CPU
    python -m pmfm.fit strategy=simulator                # the baseline: simulator in the CMA-ES loop
    python -m pmfm.fit search=adam strategy.ckpt=outputs/train/<run>/checkpoints/last.ckpt
    python -m pmfm.fit strategy=prescreen                # CMA-ES simulating only the surrogate's picks
    python -m pmfm.fit data=folder data.path=/data/grp test.path=/data/grp_test
    python -m pmfm.fit experiment=fit/kong2021           # paper scale (GPU)
    python -m pmfm.fit hydra.run.dir=outputs/fit/<run>   # resume a killed fit where it stopped
    (a resumed search with the simulator in the loop may change strategy.cmaes.max_generations)

Writes results.csv (released test_all layout plus coefficients), maps, validity, summary and figures.
"""

import hydra
from omegaconf import DictConfig

from pmfm.pipelines.config import exit_on_user_error, run_folder
from pmfm.pipelines.fit.run import fit


@hydra.main(version_base="1.3", config_path="conf", config_name="fit")
def main(cfg: DictConfig) -> float:
    return exit_on_user_error(fit, cfg, run_folder())


if __name__ == "__main__":
    main()
