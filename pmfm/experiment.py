"""``python -m pmfm.experiment study=<name>``: rerun one study of the seed study (pmfm/studies/).

    python -m pmfm.experiment study=sc_insensitivity      # assumption 1 (CPU reduced size)
    python -m pmfm.experiment study=smoothness            # assumption 2
    python -m pmfm.experiment study=model_comparison      # surrogates side by side
    python -m pmfm.experiment study=search_comparison     # CMA-ES vs Adam vs CMA-ES + penalty
    python -m pmfm.experiment study=parameter_recovery    # fit targets made from known parameters
    python -m pmfm.experiment study=speedup               # time per evaluation, whole-fit wall time
    python -m pmfm.experiment study=smoothness_gpu        # the six above at GPU scale: <name>_gpu
    python -m pmfm.experiment study=surrogate_cv          # leave-one-CMA-ES-run-out of model=...
    python -m pmfm.experiment study=surrogate_ceiling     # the noise ceiling of ranking held-out runs
    python -m pmfm.experiment study=fit_acceptance study.simulator_run=... 'study.surrogate_runs=[...]'
    python -m pmfm.experiment study=linearised_bold_fc    # the linearised BOLD FC as a ranker

Each run folder (``outputs/experiment/<study>/<date>/``) gets the study's tables, figures and
summary; experiments/README.md collects the runs that were made.
"""

import hydra
from omegaconf import DictConfig

from pmfm.pipelines.config import exit_on_user_error, run_folder
from pmfm.studies import run_study


@hydra.main(version_base="1.3", config_path="conf", config_name="experiment")
def main(cfg: DictConfig) -> None:
    out_dir = run_folder()
    exit_on_user_error(run_study, cfg, out_dir)
    print(f"run folder: {out_dir}")


if __name__ == "__main__":
    main()
