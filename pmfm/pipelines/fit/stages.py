"""The stages of a fit (docs/fitting.md), each resumable through a :class:`RunState`.

    search       simulator strategy: Kong2021's multi-start CMA-ES with the simulator in the loop
                 (saved after every generation); surrogate strategy: search against the surrogate,
                 then ``resimulate`` its candidates on the training split at the training R
    validation   every candidate at R = 20 on the validation split; top k with the diversity rule
    test         each chosen set in groups of repeats on a user-named test split (never validation)

Every stage returns plain tensors and arrays and saves them under its name; a stage found on disk
is loaded, not rerun. Costs are (K, 3) arrays of (fc_cost, ks, total) at the stage's R.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from pmfm.cost import Costs
from pmfm.cost.stats import cost_from_stats
from pmfm.evaluate import SimulatorObjective, choose_diverse, evaluate_params, grouped_costs, validate
from pmfm.pipelines.fit.state import RunState, StateError
from pmfm.pipelines.progress import progress_bar
from pmfm.search.cmaes import MultiStartCMAES
from pmfm.search.prescreen import PrescreenedObjective
from pmfm.search.runner import SearchSettings, start_points, surrogate_search

log = logging.getLogger(__name__)


class FitError(RuntimeError):
    """A fit that cannot go on (no usable candidate)."""


@dataclass
class Candidates:
    """Parameter sets that go to validation, with their training costs."""

    theta: torch.Tensor  # (K, P) float64
    start: np.ndarray  # (K,) int, 1-based
    generation: np.ndarray  # (K,) int, 1-based generation (or search step) it was found in
    train: np.ndarray  # (K, 3) fc_cost, ks, total on the training split (simulated, R = train R)
    per_generation: np.ndarray  # (G, S) best cost per generation and start, for the figure
    per_generation_label: str  # what per_generation holds
    train_valid: np.ndarray | None = None  # (K,) repeats valid for both terms on the training split


def _costs3(costs: Costs) -> np.ndarray:
    """(K, 3) fc_cost, ks, total (+ fc_l1 is inside total for the DELSSOME variant)."""
    return np.column_stack([costs.fc_cost.numpy(), costs.ks.numpy(), costs.total.numpy()])


def simulator_search(
    state: RunState, space, data, simulator, variant, *, n_starts, repeats, settings, seed,
    prescreen=None, simulate_top: int = 0, progress: bool = True,
) -> Candidates:  # fmt: skip
    """Kong2021's CMA-ES with the simulator in the loop, all starts batched; resumes per generation.

    The kept candidates are every start's best of every generation (docs/fitting.md#training-cma-es). With
    ``prescreen`` (a surrogate :class:`~pmfm.evaluate.objective.Objective`) only each start's
    ``simulate_top`` best-scored sets of a generation are simulated (:mod:`pmfm.search.prescreen`).
    """
    return targets_search(
        state, space, [data], simulator, variant, n_starts=n_starts, repeats=repeats, settings=settings,
        seed=seed, prescreen=prescreen, simulate_top=simulate_top, progress=progress,
    )[0]  # fmt: skip


def targets_search(
    state: RunState, space, targets: list, simulator, variant, *, n_starts, repeats, settings, seed,
    prescreen=None, simulate_top: int = 0, progress: bool = True, starts=None, name: str = "search",
    learner=None, covariances=None,
) -> list[Candidates]:  # fmt: skip
    """:func:`simulator_search` of every target at once: ``n_starts`` starts a target (target t has
    starts t n .. t n + n - 1, each the start it would have alone), every start's population
    simulated in one batch per generation (the targets share their SC), each candidate costed
    against its own target: each target's search is the one it would get alone.

    ``starts``: (T n, P) raw starting points (default: random starts); ``name``: the stage's name in
    ``state`` (its progress is ``<name>_progress``). ``prescreen`` gets the sample ids as ``keys``.
    ``learner``: ``learner.after(result)`` sees every generation's result (simulations keep their
    statistics), and its ``state_dict()`` is saved with the progress, so a resumed search resumes it.
    ``covariances``: (T n, P, P) initial CMA-ES covariances of the starts (default: Kong's diagonal).
    """
    if state.has(name):
        budget = state.load(f"{name}_progress")["cmaes"]["settings"]["max_generations"]
        if budget != settings.max_generations:
            raise StateError(
                f"the search of this run finished under max_generations={budget}; its budget can change "
                f"on resume only while the search is running (got {settings.max_generations})"
            )
        saved = state.load(name)
        return [Candidates(**c) for c in (saved if isinstance(saved, list) else [saved])]
    n_targets, total_starts = len(targets), n_starts * len(targets)

    def target_of(keys: torch.Tensor) -> torch.Tensor:  # keys: MultiStartCMAES's sample ids
        return (keys // settings.popsize) % total_starts // n_starts

    simulate = SimulatorObjective(
        space, targets[0] if n_targets == 1 else list(targets), simulator, repeats=repeats, seed=seed,
        variant=variant, common_noise=True, target_of=None if n_targets == 1 else target_of,
        keep_stats=learner is not None,
    )  # fmt: skip
    screened = None
    if prescreen is not None:
        if not settings.mu <= simulate_top <= settings.popsize:
            raise ValueError(
                f"strategy.simulate_top={simulate_top}: expected mu ({settings.mu}) <= simulate_top <= "
                f"popsize ({settings.popsize}), so that every parent is a simulated set"
            )
        screened = PrescreenedObjective(
            simulate, prescreen, group_size=settings.popsize, simulate_top=simulate_top
        )
    objective = simulate if screened is None else screened
    # every target's starts are the starts a fit of it alone would have (points, samples and noise alike)
    if starts is None:
        starts = start_points(space, seed, range(n_starts)).repeat(n_targets, 1)
    ids = list(range(n_starts)) * n_targets
    searcher = MultiStartCMAES(objective, starts, settings, seed=seed, start_ids=ids, covariances=covariances)
    counts = {"wall_s": 0.0, "simulations": 0, "evaluations": 0}
    if state.has(f"{name}_progress"):
        saved = state.load(f"{name}_progress")
        searcher.load_state_dict(saved["cmaes"])
        counts = saved["progress"]
        if learner is not None:
            learner.load_state_dict(saved["learner"])
        log.info("resuming the search after generation %d", searcher.generation)
    bar = progress_bar(settings.max_generations, name, unit="gen", enabled=progress)
    bar.update(searcher.generation)
    while not searcher.done:
        tic = time.perf_counter()
        before = 0 if screened is None else screened.simulated_sets
        result = searcher.step()
        if learner is not None:
            learner.after(result)
        counts["wall_s"] += time.perf_counter() - tic
        if screened is None:
            simulated = result.batch_size
        else:  # this generation's sets: the surrogate scored them all, the simulator ran its choice
            simulated = screened.simulated_sets - before
            counts["evaluations"] = counts.get("evaluations", 0) + result.batch_size
        counts["simulations"] += simulated * repeats
        best = min((s.total[s.best].item() for s in result.starts if s.best >= 0), default=float("nan"))
        log.info(
            "generation %d: %d sets simulated x R=%d%s, best training total %.4f",
            result.generation,
            simulated,
            repeats,
            "" if prescreen is None else f" (of {result.batch_size} pre-scored)",
            best,
        )
        learned = {} if learner is None else {"learner": learner.state_dict()}
        state.save(f"{name}_progress", {"cmaes": searcher.state_dict(), "progress": counts, **learned})
        bar.update(1)
        bar.set_postfix(best=f"{best:.4f}", sims=counts["simulations"])
    bar.close()
    found = []
    for t in range(n_targets):
        kept = [b for per_start in searcher.history for b in per_start if b.start // n_starts == t]
        per_generation = np.full((searcher.generation, n_starts), np.nan)
        for b in kept:
            per_generation[b.generation - 1, b.start % n_starts] = b.total
        terms = {
            k: np.array([b.terms.get(k, np.nan) for b in kept])
            for k in ("fc_cost", "ks", "n_valid_fc", "n_valid_fcd")
        }
        found.append(Candidates(
            theta=torch.stack([b.theta for b in kept]),
            start=np.array([b.start % n_starts + 1 for b in kept]),
            generation=np.array([b.generation for b in kept]),
            train=np.column_stack([terms["fc_cost"], terms["ks"], [b.total for b in kept]]),
            per_generation=per_generation,
            per_generation_label=f"best training total of the generation (R = {repeats})",
            train_valid=np.minimum(terms["n_valid_fc"], terms["n_valid_fcd"]),
        ))  # fmt: skip
    state.save(name, asdict(found[0]) if n_targets == 1 else [asdict(c) for c in found])
    of = "" if n_targets == 1 else f" for each of {n_targets} targets"
    state.record(
        name,
        wall_s=counts["wall_s"],
        simulations=int(counts["simulations"]),
        evaluations=int(counts.get("evaluations", 0)),
        note=f"{n_starts} starts{of}, {searcher.generation} generations, population {settings.popsize}"
        + ("" if prescreen is None else f", the pre-screen's best {simulate_top} per start simulated"),
    )
    return found


def surrogate_search_stage(
    state: RunState, model, space, settings: SearchSettings, *, top_k, seed, starts=None, progress=True
) -> dict:
    """Search against the surrogate from ``settings.n_starts`` random starts (or ``starts`` (S, P));
    ``top_k`` diverse candidates (predictions)."""
    if state.has("surrogate_search"):
        return state.load("surrogate_search")
    tic = time.perf_counter()
    n_starts = settings.n_starts if starts is None else len(starts)
    steps = settings.steps if settings.name == "adam" else settings.max_generations
    with progress_bar(steps, f"surrogate {settings.name}", unit="step", enabled=progress) as bar:
        outcome = surrogate_search(
            model,
            space,
            settings,
            n_starts=n_starts,
            top_k=top_k,
            seed=seed,
            starts=starts,
            progress=bar.update,
        )
    found = {
        "theta": outcome.theta,
        "start": outcome.start + 1,
        "step": outcome.step,
        "predicted": outcome.predicted,
        "history": outcome.history,
    }
    state.save("surrogate_search", found)
    state.record(
        "surrogate_search",
        wall_s=time.perf_counter() - tic,
        evaluations=outcome.evaluations,
        note=f"{settings.name}, {n_starts} starts",
    )
    return found


def resimulate_stage(
    state: RunState, found: dict, space, data, simulator, variant, *, repeats, seed, progress=True
) -> Candidates:
    """Simulate the surrogate's candidates on the training split at the training R."""
    if state.has("search"):
        return Candidates(**state.load("search"))
    tic = time.perf_counter()
    with progress_bar(len(found["theta"]) * repeats, "re-simulate", enabled=progress) as bar:
        costs = evaluate_params(
            found["theta"], space, data, simulator, repeats=repeats, seed=seed, variant=variant,
            progress=bar.update,
        ).costs  # fmt: skip
    candidates = Candidates(
        theta=found["theta"],
        start=np.asarray(found["start"]),
        generation=np.asarray(found["step"]),
        train=_costs3(costs),
        per_generation=np.asarray(found["history"]),
        per_generation_label="best predicted score so far (surrogate)",
        train_valid=costs.n_valid().numpy(),
    )
    state.save("search", asdict(candidates))
    state.record(
        "resimulate",
        wall_s=time.perf_counter() - tic,
        simulations=len(found["theta"]) * repeats,
        note=f"{len(found['theta'])} candidates x R={repeats} on the training split",
    )
    return candidates


def validation_stage(
    state: RunState,
    candidates: Candidates,
    space,
    data,
    simulator,
    variant,
    *,
    repeats,
    seed,
    top_k,
    diversity,
    progress=True,
) -> dict:
    """Every candidate at R = ``repeats`` on the validation split; choose the top k (diversity rule).

    Returns "vali" (K, 3), "vali_valid" (K,) repeats valid for both terms, "chosen" (indices, best
    first) and the chosen best set's per-repeat FC and FCD CDFs ("best_fc" (R, E), "best_cdf"
    (R, bins), validity masks) for the figure; FIC: also "vali_rate" (K, N) mean excitatory rates.
    """
    if state.has("validation"):
        return state.load("validation")
    tic = time.perf_counter()
    with progress_bar(len(candidates.theta) * repeats, "validation", enabled=progress) as bar:
        evaluation = validate(
            candidates.theta, space, data, simulator, repeats=repeats, seed=seed, variant=variant,
            keep_stats=True, progress=bar.update,
        )  # fmt: skip
    vali = _costs3(evaluation.costs)
    usable = (evaluation.costs.n_valid_fc > 0).numpy() & (evaluation.costs.n_valid_fcd > 0).numpy()
    ranked = np.where(usable, vali[:, 2], np.inf)  # a set with no valid repeat for a term is never chosen
    chosen = choose_diverse(candidates.theta, ranked, space, k=top_k, threshold=diversity)
    if not chosen:
        raise FitError(
            f"none of the {len(ranked)} candidates had a valid validation repeat for both cost terms "
            f"(R = {repeats}): nothing to choose. A longer search (more starts or generations) or "
            "another seed usually finds valid sets."
        )
    if len(chosen) < min(top_k, len(ranked)):  # fewer candidates than top_k is no news
        log.warning(
            "validation: %d of %d candidates were valid in some repeat for both terms; %d chosen, not %d",
            int(usable.sum()), len(usable), len(chosen), top_k,
        )  # fmt: skip
    stats = evaluation.stats
    assert stats is not None  # asked for with keep_stats
    rows = slice(chosen[0] * repeats, (chosen[0] + 1) * repeats)
    out = {
        "vali": vali,
        "vali_valid": evaluation.costs.n_valid().numpy(),
        "chosen": chosen,
        "best_fc": stats.fc[rows].clone(),
        "best_cdf": stats.cdf[rows].clone(),
        "best_fc_valid": stats.fc_valid[rows].clone(),
        "best_fcd_valid": stats.fcd_valid[rows].clone(),
    }
    if evaluation.costs.mean_rate is not None:  # FIC: the rates behind each candidate's validity
        out["vali_rate"] = evaluation.costs.mean_rate.numpy()
    state.save("validation", out)
    state.record(
        "validation",
        wall_s=time.perf_counter() - tic,
        simulations=len(candidates.theta) * repeats,
        note=f"{len(candidates.theta)} candidates x R={repeats}, {len(chosen)} chosen",
    )
    return out


def test_stage(
    state: RunState, theta, space, data, simulator, variant, *, repeats, group_size, seed, progress=True
) -> np.ndarray:
    """(C, 3) mean fc_cost, ks, total over the finite groups of each chosen set (docs/fitting.md#test).

    The saved stage is reused only for the same test folder and settings; otherwise it is rerun.
    """
    key = {"source": str(data.source), "repeats": repeats, "group_size": group_size, "seed": seed}
    if state.has("test") and state.load("test")["key"] == key:
        return state.load("test")["means"]
    if repeats % group_size:
        raise ValueError(f"test.repeats={repeats} is not a multiple of test.group_size={group_size}")
    tic = time.perf_counter()
    with progress_bar(len(theta) * repeats, "test", enabled=progress) as bar:
        groups = grouped_costs(
            theta, space, data, simulator, group_size=group_size, n_groups=repeats // group_size,
            seed=seed, variant=variant, stage="test", progress=bar.update,
        )  # fmt: skip
    with np.errstate(all="ignore"):
        means = np.column_stack([np.nanmean(groups[k], axis=1) for k in ("fc_cost", "ks", "total")])
    state.save("test", {"key": key, "means": means})
    state.record(
        "test",
        wall_s=time.perf_counter() - tic,
        simulations=len(theta) * repeats,
        note=f"{len(theta)} sets x {repeats} repeats in groups of {group_size}",
    )
    return means


def truth_stage(state: RunState, truth, space, data, simulator, variant, *, repeats, seed) -> float:
    """A synthetic target's own truth at the validation stage's R and noise: the total a perfect fit
    would score there (not 0: the subject's runs had other noise)."""
    if state.has("truth"):
        return float(state.load("truth"))
    tic = time.perf_counter()
    theta = torch.as_tensor(np.asarray(truth, dtype=np.float64)[None])  # (1, P)
    costs = validate(theta, space, data, simulator, repeats=repeats, seed=seed, variant=variant).costs
    total = float(costs.total[0])
    state.save("truth", total)
    note = f"the truth at R={repeats} with the validation noise (a reference, not a fit)"
    state.record("truth", wall_s=time.perf_counter() - tic, simulations=repeats, note=note)
    return total


def bank_stage(state: RunState, rows: dict, stats, space, data, variant, *, top_k, diversity) -> Candidates:
    """The bank's best ``top_k`` diverse rows for ``data``, costed from their stored statistics
    (no simulation); their training costs are those estimates, at the bank's R."""
    if state.has("search"):
        return Candidates(**state.load("search"))
    tic = time.perf_counter()
    costs = cost_from_stats(stats, data.fc, data.fcd_cdf, variant, "fit")
    usable = ((costs.n_valid_fc > 0) & (costs.n_valid_fcd > 0)).numpy()
    ranked = np.where(usable, costs.total.numpy(), np.inf)  # (rows,)
    order = np.argsort(ranked, kind="stable")[: 50 * top_k]  # the diversity rule walks down from the best
    theta = torch.as_tensor(rows["theta"][order], dtype=torch.float64)
    picked = order[choose_diverse(theta, ranked[order], space, k=top_k, threshold=diversity)]
    if not len(picked):
        raise FitError(f"no bank row has a valid repeat for both cost terms against {data.source}")
    best = np.sort(ranked[np.isfinite(ranked)])[:200]
    candidates = Candidates(
        theta=torch.as_tensor(rows["theta"][picked], dtype=torch.float64),
        start=rows["part"][picked] + 1,
        generation=np.maximum(rows["generation"][picked], 0) + 1,
        train=np.column_stack([costs.fc_cost.numpy(), costs.ks.numpy(), costs.total.numpy()])[picked],
        per_generation=best[:, None],
        per_generation_label=f"bank rows by cost from their statistics, best first (R = {stats.repeats})",
        train_valid=np.minimum(costs.n_valid_fc.numpy(), costs.n_valid_fcd.numpy())[picked],
    )
    state.save("search", asdict(candidates))
    state.record(
        "bank",
        wall_s=time.perf_counter() - tic,
        note=f"{len(ranked)} bank rows costed from their statistics; the best {len(picked)} diverse kept",
    )
    return candidates


def refine_stage(
    state: RunState, objective, starts: torch.Tensor, settings, *, seed, covariances=None
) -> torch.Tensor:
    """CMA-ES against an emulator (``objective``, no simulation) from ``starts`` (S, P), with initial
    ``covariances`` (S, P, P) or Kong's diagonal: each start's best valid set over its run (the start
    itself where none beats it), (S, P) raw parameters."""
    if state.has("refine"):
        return state.load("refine")
    tic = time.perf_counter()
    searcher = MultiStartCMAES(objective, starts, settings, seed=seed, covariances=covariances)
    first = objective(starts, keys=torch.arange(len(starts)) * settings.popsize)  # the starts' own scores
    best = starts.clone()
    best_total = torch.where(first.valid, first.total, torch.full_like(first.total, np.inf))
    searcher.run()
    for s, per_start in enumerate(searcher.history):
        for b in per_start:
            if b.valid and b.total < best_total[s]:
                best[s], best_total[s] = b.theta, b.total
    state.save("refine", best)
    state.record(
        "refine",
        wall_s=time.perf_counter() - tic,
        evaluations=int(objective.n_evaluations),
        note=f"CMA-ES on the emulator from {len(starts)} bank rows, {searcher.generation} generations",
    )
    return best
