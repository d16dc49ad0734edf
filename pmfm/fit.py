"""``python -m pmfm.fit strategy=simulator|surrogate``: fit the pMFM to data, Kong2021's protocol.

    python -m pmfm.fit                                   # surrogate strategy, bundled HCP data, CPU
    python -m pmfm.fit strategy=simulator                # the baseline: simulator in the CMA-ES loop
    python -m pmfm.fit search=adam strategy.ckpt=outputs/train/<run>/checkpoints/last.ckpt
    python -m pmfm.fit search=prescreen                  # CMA-ES simulating only the surrogate's picks
    python -m pmfm.fit data=folder data.path=/data/grp test.path=/data/grp_test
    python -m pmfm.fit experiment=fit_kong2021 strategy=simulator   # paper scale (GPU)
    python -m pmfm.fit hydra.run.dir=outputs/fit/<run>   # resume a killed fit where it stopped
    (a resumed simulator search may change strategy.cmaes.max_generations: stop early or run on)

Search (simulator in the loop, or surrogate + re-simulation), validation (R = 20, top 10, diversity
0.98) and, given ``test.path``, the test stage. Writes results.csv (released test_all layout plus
coefficients; ``python -m pmfm.simulate params_csv=results.csv params_layout=test_all`` reads it),
maps.csv / maps.png, summary.csv / summary.json, best_fc_fcd.png and cost_per_generation.png.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pmfm.cost import cost_variant
from pmfm.data import DataError, load
from pmfm.datasets import DatasetError
from pmfm.fitting import RunState, StateError, report, stages
from pmfm.fitting.surrogate import prepare_surrogate, search_starts
from pmfm.params import ParamError
from pmfm.search.cmaes import CMAESSettings
from pmfm.search.runner import SearchSettings
from pmfm.search.surrogate import SurrogateObjective, SurrogateScore
from pmfm.sim.simulator import Simulator
from pmfm.simulate import load_data

log = logging.getLogger(__name__)
NOT_IDENTITY = ("test", "compare_to", "plot", "hydra")  # may change when a fit is resumed


def fit(cfg: DictConfig, out_dir: Path) -> float:
    """Seed, data, search, validation, test, report; returns the best validation total."""
    L.seed_everything(cfg.seed, workers=True)
    state = RunState(out_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    identity = {k: v for k, v in resolved.items() if k not in NOT_IDENTITY}
    # a resumed simulator-in-the-loop search may run for more generations
    extendable: list[tuple[str, ...]] = [("strategy", "cmaes", "max_generations")]
    if cfg.search.name == "prescreen":
        extendable.append(("search", "max_generations"))
    if state.claim(identity, ignore=extendable):
        log.info("resuming the fit in %s", out_dir)
    simulator = Simulator.from_config(cfg.simulator, cfg.device)
    variant = cost_variant(cfg.cost.name, simulator.circuit)
    train_data = load_data(cfg.data, simulator, variant)
    space = simulator.param_space(train_data)  # the TRAINING data's covariates (and FC), every stage
    split = {"n_tr": simulator.protocol.n_tr, "window": variant.window, "n_bins": variant.n_bins}
    vali_data = load(cfg.data.path, cfg.validation.split, **split)
    test_data = load_test(cfg.test.path, train_data.n_regions, split)
    strategy, seed = cfg.strategy, int(cfg.seed)

    if strategy.name == "simulator":
        settings = CMAESSettings(**{str(k): v for k, v in strategy.cmaes.items()})
        candidates = stages.simulator_search(
            state, space, train_data, simulator, variant,
            n_starts=strategy.n_starts, repeats=strategy.repeats, settings=settings, seed=seed,
        )  # fmt: skip
    elif strategy.name == "surrogate" and cfg.search.name == "prescreen":
        model = prepare_surrogate(cfg, out_dir, state)
        screen = {str(k): v for k, v in cfg.search.items()}
        simulate_top, penalty = screen.pop("simulate_top"), screen.pop("validity_penalty")
        n_starts = screen.pop("n_starts")
        del screen["name"]
        candidates = stages.simulator_search(
            state, space, train_data, simulator, variant,
            n_starts=n_starts, repeats=strategy.repeats, settings=CMAESSettings(**screen), seed=seed,
            prescreen=SurrogateObjective(space, SurrogateScore(model, validity_penalty=penalty)),
            simulate_top=simulate_top,
        )  # fmt: skip
    elif strategy.name == "surrogate":
        model = prepare_surrogate(cfg, out_dir, state)
        search = SearchSettings.from_config(cfg.search)
        found = stages.surrogate_search_stage(
            state, model, space, search,
            n_starts=strategy.n_starts, top_k=strategy.top_k, seed=seed, starts=search_starts(cfg, space),
        )  # fmt: skip
        candidates = stages.resimulate_stage(
            state, found, space, train_data, simulator, variant, repeats=strategy.repeats, seed=seed
        )
    else:
        raise ValueError(f"strategy.name={strategy.name!r}; expected 'simulator' or 'surrogate'")

    v = cfg.validation
    evaluator = simulator.for_evaluation()  # FIC: the validation and test step (eval_dt, 0.0005 s)
    validation = stages.validation_stage(
        state, candidates, space, vali_data, evaluator, variant,
        repeats=v.repeats, seed=v.seed, top_k=v.top_k, diversity=v.diversity,
    )  # fmt: skip
    chosen = candidates.theta[validation["chosen"]]
    test = None
    if test_data is None:
        print(SKIPPED_TEST, file=sys.stderr)
        log.warning("test stage skipped: no test split (test.path=null)")
    else:
        t = cfg.test
        test = stages.test_stage(
            state, chosen, space, test_data, evaluator, variant,
            repeats=t.repeats, group_size=t.group_size, seed=t.seed,
        )  # fmt: skip

    results = report.fit_results(candidates, validation, test)
    report.write_outputs(out_dir, results, candidates, validation, space, vali_data, variant, cfg.plot)
    validity = report.chosen_validity(candidates, validation)
    report.write_validity(out_dir, validity, strategy.repeats, v.repeats)
    device = f"{simulator.device} ({simulator.name}: {simulator.resolved_method}, {str(simulator.dtype)[6:]})"
    if evaluator is not simulator:
        device += f"; validation and test at dt = {evaluator.protocol.dt} s"
    chosen_costs = {
        "vali": [float(t) for t in results.costs["vali"][:, 2]],
        "vali_valid": [int(n) for n in validity["vali_valid"]],
        "repeats": int(v.repeats),
    }
    rows, notes = report.summary_table(state.summary(), device, cfg.compare_to, chosen_costs)
    print(report.write_summary(out_dir, rows, notes, strategy.name, device, chosen_costs))
    print(
        report.results_text(
            results, strategy.repeats, v.repeats, None if test is None else cfg.test.group_size, validity
        )
    )
    print(f"run folder: {out_dir}")
    return float(results.costs["vali"][0, 2])


SKIPPED_TEST = """
############################################################################################
#  TEST STAGE SKIPPED: no test split was named (test.path=null).                           #
#  The costs reported are training and validation costs only; validation is never reused  #
#  as test. Name a folder with sc_test.csv, fc_test.csv, fcd_test.mat: test.path=<folder>  #
############################################################################################
"""


def load_test(path, n_regions: int, split: dict):
    """The user's test split (covariates are never taken from it), or None when not named."""
    if not path:
        return None
    data = load(path, "test", **split)
    if data.n_regions != n_regions:
        raise DataError(
            Path(path), f"test split has {data.n_regions} regions", f"{n_regions}, as the training data"
        )
    return data


@hydra.main(version_base="1.3", config_path="../conf", config_name="fit")
def main(cfg: DictConfig) -> float:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        return fit(cfg, out_dir)
    except (DataError, ParamError, DatasetError, StateError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
