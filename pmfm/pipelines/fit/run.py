"""A whole fit (``python -m pmfm.fit``): search with the chosen strategy, then validation (R = 20,
top 10, diversity 0.98) and, given ``test.path``, the test stage; resumable stage by stage.

Writes results.csv (released test_all layout plus coefficients; ``python -m pmfm.simulate
params_csv=results.csv params_layout=test_all`` reads it), maps.csv / maps.png, validity.csv,
summary.csv / summary.json, best_fc_fcd.png and cost_per_generation.png.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from pmfm.pipelines.config import ConfigError, load_data, load_test, simulator_of, variant_of
from pmfm.pipelines.fit import report, stages
from pmfm.pipelines.fit.state import NOT_IDENTITY, RunState
from pmfm.pipelines.fit.surrogate import prepare_surrogate, search_starts
from pmfm.pipelines.fit.targets import fit_targets
from pmfm.search.cmaes import CMAESSettings
from pmfm.search.runner import SearchSettings
from pmfm.search.surrogate import SurrogateObjective, SurrogateScore

log = logging.getLogger(__name__)
STRATEGIES = ("simulator", "surrogate", "prescreen", "bank", "amortised")


def check_strategy(cfg: DictConfig) -> None:
    """Refuse settings the chosen strategy would not use, before any work is done."""
    name = cfg.strategy.name
    if name not in STRATEGIES:
        raise ConfigError(f"strategy.name={name!r}; expected one of {STRATEGIES}")
    if name != "surrogate" and cfg.get("search") is not None:
        raise ConfigError(
            f"strategy={name} runs its own CMA-ES (strategy.cmaes, strategy.n_starts); search= chooses "
            "the searcher of strategy=surrogate. Drop search=, or use strategy=surrogate."
        )


def fit(cfg: DictConfig, out_dir: Path) -> float:
    """Seed, data, search, validation, test, report; returns the best validation total (many
    targets, ``targets.path``, or a bank: :func:`pmfm.pipelines.fit.targets.fit_targets`)."""
    check_strategy(cfg)
    if cfg.targets.path or cfg.strategy.name in ("bank", "amortised"):
        return fit_targets(cfg, out_dir)
    L.seed_everything(cfg.seed, workers=True)
    state = RunState(out_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    identity = {k: v for k, v in resolved.items() if k not in NOT_IDENTITY}
    # a resumed search with the simulator in the loop may run for more generations
    if state.claim(identity, ignore=[("strategy", "cmaes", "max_generations")]):
        log.info("resuming the fit in %s", out_dir)
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    train_data = load_data(cfg.data, simulator, variant)
    space = simulator.param_space(train_data)  # the TRAINING data's covariates (and FC), every stage
    vali_data = load_data(cfg.data, simulator, variant, split=cfg.validation.split)
    test_data = load_test(cfg, train_data.n_regions, simulator, variant)
    strategy, seed, bars = cfg.strategy, int(cfg.seed), cfg.progress

    if strategy.name == "surrogate":
        model = prepare_surrogate(cfg, out_dir, state)
        search = SearchSettings.from_config(cfg.search)
        found = stages.surrogate_search_stage(
            state, model, space, search, top_k=strategy.top_k, seed=seed, starts=search_starts(cfg, space),
            progress=bars,
        )  # fmt: skip
        candidates = stages.resimulate_stage(
            state, found, space, train_data, simulator, variant, repeats=strategy.repeats, seed=seed,
            progress=bars,
        )  # fmt: skip
    else:
        prescreen = None
        if strategy.name == "prescreen":
            model = prepare_surrogate(cfg, out_dir, state)
            prescreen = SurrogateObjective(
                space, SurrogateScore(model, validity_penalty=strategy.validity_penalty)
            )
        candidates = stages.simulator_search(
            state, space, train_data, simulator, variant,
            n_starts=strategy.n_starts, repeats=strategy.repeats, seed=seed,
            settings=CMAESSettings(**{str(k): v for k, v in strategy.cmaes.items()}),
            prescreen=prescreen, simulate_top=strategy.get("simulate_top", 0), progress=bars,
        )  # fmt: skip

    v = cfg.validation
    evaluator = simulator.for_evaluation()  # FIC: the validation and test step (eval_dt, 0.0005 s)
    validation = stages.validation_stage(
        state, candidates, space, vali_data, evaluator, variant,
        repeats=v.repeats, seed=v.seed, top_k=v.top_k, diversity=v.diversity, progress=bars,
    )  # fmt: skip
    chosen = candidates.theta[validation["chosen"]]
    test = None
    if test_data is None:
        print(report.SKIPPED_TEST, file=sys.stderr)
        log.warning("test stage skipped: no test split (test.path=null)")
    else:
        t = cfg.test
        test = stages.test_stage(
            state, chosen, space, test_data, evaluator, variant,
            repeats=t.repeats, group_size=t.group_size, seed=t.seed, progress=bars,
        )  # fmt: skip

    results = report.fit_results(candidates, validation, test)
    report.write_outputs(out_dir, results, candidates, validation, space, vali_data, variant, cfg.plot)
    validity = report.chosen_validity(candidates, validation)
    report.write_validity(out_dir, validity, strategy.repeats, v.repeats)
    device = simulator.describe()
    if evaluator is not simulator:
        device += f"; validation and test at dt = {evaluator.protocol.dt} s"
    chosen_costs = {
        "vali": [float(t) for t in results.costs["vali"][:, 2]],
        "vali_valid": [int(n) for n in validity["vali_valid"]],
        "repeats": int(v.repeats),
    }
    rows, notes = report.summary_table(state.summary(), device, cfg.compare_to, chosen_costs)
    print(report.write_summary(out_dir, rows, notes, strategy.name, device, chosen_costs))
    test_r = None if test is None else cfg.test.group_size
    print(report.results_text(results, strategy.repeats, v.repeats, test_r, validity))
    print(f"run folder: {out_dir}")
    return float(results.costs["vali"][0, 2])
