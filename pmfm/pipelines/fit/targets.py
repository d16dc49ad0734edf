"""Fit many targets in one run (``python -m pmfm.fit targets.path=<folder>``): each target gets the
usual results folder, and ``targets.csv`` sets them side by side.

- ``strategy=bank``: every bank row costed against each target from its stored statistics (no
  simulation), the best few diverse rows re-simulated by the validation stage.
- ``strategy=simulator``: Kong2021's CMA-ES for every target at once, all targets' populations
  simulated in one batch per generation.

Each target's protocol follows its runs' TR and length (pmfm.sim.protocol.protocol_for_run); where a
target holds its ground truth (a synthetic subject), the table reports how well the fit recovers it.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
from omegaconf import DictConfig, OmegaConf

from pmfm.cost import RepeatStats, combine_repeats, fcd_pair_count
from pmfm.data import EmpiricalData, bundled_path
from pmfm.data.targets import Target, find_targets, read_target
from pmfm.datasets.bank import Bank, bank_stats, fingerprint
from pmfm.datasets.store import atomic_write_bytes
from pmfm.evaluate import map_correlations
from pmfm.params import ParamSpace
from pmfm.pipelines.config import ConfigError, load_data, load_test, simulator_of, variant_of
from pmfm.pipelines.fit import report, stages
from pmfm.pipelines.fit.amortised import amortised_candidates
from pmfm.pipelines.fit.report import SKIPPED_TEST
from pmfm.pipelines.fit.state import NOT_IDENTITY, RunState
from pmfm.pipelines.folders import dataset_folder
from pmfm.plots import plot_targets
from pmfm.search.cmaes import CMAESSettings
from pmfm.sim.protocol import protocol_for_run
from pmfm.sim.simulator import Simulator

log = logging.getLogger(__name__)
TABLE_COLUMNS = (
    "target",
    "vali_total",
    "vali_se",
    "truth_total",
    "simulations",
    "wall_s",
    "r_w",
    "r_I",
    "r_sigma",
    "G_error",
)


@dataclasses.dataclass
class Fitted:
    """One target of the run: its data, where its results go, what its fit used."""

    target: Target
    simulator: Simulator  # its protocol follows the target's runs
    space: ParamSpace  # its training data's covariates (FIC: and bounds from its mean FC)
    train: EmpiricalData
    vali: EmpiricalData
    test: EmpiricalData | None
    folder: Path
    state: RunState


def fit_targets(cfg: DictConfig, out_dir: Path) -> float:
    """Search, validation and test for every target; returns the mean best validation total."""
    L.seed_everything(cfg.seed, workers=True)
    state = RunState(out_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    if state.claim(
        {k: v for k, v in resolved.items() if k not in NOT_IDENTITY},
        ignore=[("strategy", "cmaes", "max_generations")],
    ):
        log.info("resuming the fit in %s", out_dir)
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    fits = (
        _many(cfg, out_dir, simulator, variant)
        if cfg.targets.path
        else [_one(cfg, out_dir, state, simulator, variant)]
    )
    tic = time.perf_counter()
    if cfg.strategy.name == "bank":
        candidates, train_r = _bank_candidates(cfg, fits, simulator, variant)
    elif cfg.strategy.name == "amortised":
        _check_batch(fits)
        candidates, train_r = amortised_candidates(cfg, state, out_dir, fits, simulator, variant)
    else:
        candidates, train_r = _search_candidates(cfg, state, fits, variant), int(cfg.strategy.repeats)
    shared = {"wall_s": time.perf_counter() - tic, "simulations": 0}  # one target: its own stages hold all
    rows = [_validate_and_report(cfg, f, c, variant, train_r) for f, c in zip(fits, candidates, strict=True)]
    if not cfg.targets.path and fits[0].test is None:
        print(SKIPPED_TEST, file=sys.stderr)
    if cfg.targets.path:  # the run's own stages (a batched search, a polish) serve every target
        stages_ = state.summary().values()
        shared |= {
            "simulations": sum(e["simulations"] for e in stages_),
            "wall_s": sum(e["wall_s"] for e in stages_),
        }
    table = targets_table(out_dir, rows, len(fits), shared)
    print(table)
    if cfg.compare_to:
        print(compare_targets(out_dir, Path(cfg.compare_to), cfg.strategy.name, cfg.plot))
    elif cfg.plot:
        _plot(out_dir, [r["target"] for r in rows], [rows], [cfg.strategy.name])
    print(f"run folder: {out_dir}")
    return float(np.mean([r["vali_total"] for r in rows]))


def _one(cfg: DictConfig, out_dir: Path, state: RunState, simulator, variant) -> Fitted:
    """The configured data folder as the one target (data.split, data.fcd_n_tr and test.path honoured)."""
    target = read_target(cfg.data.path or bundled_path())
    train = load_data(cfg.data, simulator, variant)
    vali = load_data(cfg.data, simulator, variant, split=cfg.validation.split)
    test = load_test(cfg, train.n_regions, simulator, variant)
    return Fitted(target, simulator, simulator.param_space(train), train, vali, test, out_dir, state)


def _many(cfg: DictConfig, out_dir: Path, simulator, variant) -> list[Fitted]:
    """``targets.path``'s targets, each simulated at its runs' TR and length, its own test split."""
    if cfg.test.path:
        raise ConfigError("with targets.path each target's own test split is used; drop test.path")
    fits = []
    for target in find_targets(cfg.targets.path):
        try:
            protocol = protocol_for_run(target.n_tr, target.tr_s, simulator.protocol)
        except ValueError as err:
            raise ConfigError(f"{target.folder / 'target.json'}: {err}") from None
        sim = dataclasses.replace(simulator, protocol=protocol)
        load = dict(window=variant.window, n_bins=variant.n_bins)
        train, vali = target.load("train", **load), target.load(cfg.validation.split, **load)
        test = target.load("test", **load) if "test" in target.splits else None
        space = sim.param_space(train)
        fits.append(
            Fitted(
                target, sim, space, train, vali, test, out_dir / target.name, RunState(out_dir / target.name)
            )
        )
    without_test = sum(f.test is None for f in fits)
    if without_test:
        log.info("%d of %d targets have no test split: their test stage is skipped", without_test, len(fits))
    return fits


def _bank_candidates(cfg, fits, simulator, variant) -> tuple[list[stages.Candidates], int]:
    bank = Bank(dataset_folder(cfg, simulator))
    rows = bank.load()
    for f in fits:  # the bank's SC, covariates, protocol, FCD bins and circuit: every target's
        bank.check(fingerprint(f.train, f.simulator, variant), f"target {f.target.folder}")
    n_tr = fits[0].simulator.protocol.n_tr
    stats = bank_stats(rows, fcd_pair_count(n_tr, variant.window), simulator.torch_device)
    top_k, diversity = cfg.strategy.top_k, cfg.validation.diversity
    found = [
        stages.bank_stage(f.state, rows, stats, f.space, f.train, variant, top_k=top_k, diversity=diversity)
        for f in fits
    ]
    return found, stats.repeats


def _search_candidates(cfg, state, fits, variant) -> list[stages.Candidates]:
    if cfg.strategy.name != "simulator":
        raise ConfigError(f"strategy={cfg.strategy.name} fits one data folder; with targets.path use "
                          "strategy=simulator, bank or amortised")  # fmt: skip
    _check_batch(fits)
    s, first = cfg.strategy, fits[0]
    return stages.targets_search(
        state, first.space, [f.train for f in fits], first.simulator, variant, n_starts=s.n_starts,
        repeats=s.repeats, settings=CMAESSettings(**{str(k): v for k, v in s.cmaes.items()}),
        seed=int(cfg.seed), progress=cfg.progress,
    )  # fmt: skip


def _check_batch(fits: list[Fitted]) -> None:
    """Targets simulated in one batch a generation share one protocol, SC and parameter space."""
    first = fits[0]
    for f in fits[1:]:
        if f.simulator.protocol != first.simulator.protocol:
            raise ConfigError(f"{f.target.folder}: another TR or run length than {first.target.folder}: "
                              "targets simulated together share them; fit them in separate runs")  # fmt: skip
        if not np.array_equal(f.train.sc, first.train.sc):
            raise ConfigError(f"{f.target.folder}: another SC than {first.target.folder}: targets "
                              "simulated together share it; fit them in separate runs")  # fmt: skip
        if not np.array_equal(f.space.box, first.space.box) or f.space.limits != first.space.limits:
            raise ConfigError(f"{f.target.folder}: another parameter space than {first.target.folder} "
                              "(covariates, or FIC bounds from the mean FC): fit them apart")  # fmt: skip


def _validate_and_report(cfg, f: Fitted, candidates, variant, train_r: int) -> dict:
    """Validation, test and the usual outputs of one target; its row of the table."""
    v, evaluator, space = cfg.validation, f.simulator.for_evaluation(), f.space
    validation = stages.validation_stage(
        f.state, candidates, space, f.vali, evaluator, variant,
        repeats=v.repeats, seed=v.seed, top_k=v.top_k, diversity=v.diversity, progress=cfg.progress,
    )  # fmt: skip
    chosen = candidates.theta[validation["chosen"]]
    test = None
    if f.test is not None:
        t = cfg.test
        test = stages.test_stage(
            f.state, chosen, space, f.test, evaluator, variant,
            repeats=t.repeats, group_size=t.group_size, seed=t.seed, progress=cfg.progress,
        )  # fmt: skip
    results = report.fit_results(candidates, validation, test)
    report.write_outputs(f.folder, results, candidates, validation, space, f.vali, variant, cfg.plot)
    validity = report.chosen_validity(candidates, validation)
    report.write_validity(f.folder, validity, train_r, v.repeats)
    truth_total = float("nan")  # the truth's own validation total, for a synthetic subject
    if f.target.truth is not None:
        truth_total = stages.truth_stage(
            f.state, f.target.truth, space, f.vali, evaluator, variant, repeats=v.repeats, seed=v.seed
        )
    summary = f.state.summary()
    chosen_costs = {
        "vali": [float(t) for t in results.costs["vali"][:, 2]],
        "vali_valid": [int(n) for n in validity["vali_valid"]],
        "repeats": int(v.repeats),
    }
    stage_rows = report.summary_table(summary, evaluator.describe(), None, chosen_costs)[0]
    report.write_summary(f.folder, stage_rows, [], cfg.strategy.name, evaluator.describe(), chosen_costs)
    if not cfg.targets.path:
        test_r = None if test is None else cfg.test.group_size
        print(report.results_text(results, train_r, v.repeats, test_r, validity))
    row = {
        "target": f.target.name,
        "vali_total": float(results.costs["vali"][0, 2]),
        "vali_se": jackknife_se(validation, f.vali, variant),
        "truth_total": truth_total,
        "simulations": sum(e["simulations"] for k, e in summary.items() if k != "truth"),  # the fit's
        "wall_s": sum(e["wall_s"] for k, e in summary.items() if k != "truth"),
    }
    return row | recovery(space, chosen[0], f.target)


def jackknife_se(validation: dict, data, variant) -> float:
    """The standard error of the best set's validation total, by the jackknife over its R repeats."""
    best = RepeatStats(validation["best_fc"], validation["best_cdf"], validation["best_fc_valid"],
                       validation["best_fcd_valid"])  # fmt: skip
    r = len(best)
    if r < 3:
        return float("nan")
    totals = []
    for i in range(r):
        keep = [j for j in range(r) if j != i]
        sub = RepeatStats(best.fc[keep], best.cdf[keep], best.fc_valid[keep], best.fcd_valid[keep])
        totals.append(float(combine_repeats(sub, data.fc, data.fcd_cdf, r - 1, variant, "fit").total[0]))
    totals_ = np.asarray(totals)
    return float(np.sqrt((r - 1) / r * ((totals_ - totals_.mean()) ** 2).sum()))


def recovery(space, theta, target: Target) -> dict:
    """Correlations of the fitted and true w, I and sigma maps and the error in G (NaN without truth)."""
    if target.truth is None:
        return dict.fromkeys(("r_w", "r_I", "r_sigma", "G_error"), float("nan"))
    r = map_correlations(space, theta, target.truth)
    return {
        "r_w": r[0],
        "r_I": r[1],
        "r_sigma": r[2],
        "G_error": abs(float(theta[space.names.index("G")]) - float(target.truth[space.names.index("G")])),
    }


def targets_table(out_dir: Path, rows: list[dict], n_targets: int, shared: dict) -> str:
    """targets.csv and the printed table: one row per target (``shared`` simulations split evenly
    among them), the run's totals below."""
    shared_sims = int(shared["simulations"])
    rows = [r | {"simulations": r["simulations"] + shared_sims // max(n_targets, 1)} for r in rows]
    lines = [",".join(TABLE_COLUMNS)]
    lines += [",".join(r[c] if c == "target" else f"{r[c]:.6g}" for c in TABLE_COLUMNS) for r in rows]
    atomic_write_bytes(out_dir / "targets.csv", ("\n".join(lines) + "\n").encode())
    head = f"{'target':<22}{'validation total':>18}{'truth':>8}{'simulations':>13}{'wall (s)':>10}"
    text = [head + "  recovery: r(w), r(I), r(sigma), |G error|"]
    for r in rows:
        total = f"{r['vali_total']:>10.4f} +- {r['vali_se']:.4f}"
        truth = "" if np.isnan(r["truth_total"]) else f"{r['truth_total']:.4f}"
        line = f"{r['target']:<22}{total}{truth:>8}{r['simulations']:>13}{r['wall_s']:>10.1f}"
        if not np.isnan(r["r_w"]):
            line += f"  {r['r_w']:.2f}, {r['r_I']:.2f}, {r['r_sigma']:.2f}, {r['G_error']:.2f}"
        text.append(line)
    mean = np.mean([r["vali_total"] for r in rows])
    tail = f"{n_targets} target{'s' * (n_targets != 1)}: mean validation total {mean:.4f}"
    if shared["wall_s"] >= 0.05 or shared_sims:
        tail += f"; shared stages: {shared['wall_s']:.1f} s, {shared_sims} simulations (split evenly above)"
    text.append(tail)
    return "\n".join(text)


def read_table(folder: Path) -> list[dict]:
    """The rows of ``folder/targets.csv`` (a many-target fit's table)."""
    path = folder / "targets.csv"
    if not path.is_file():
        raise ConfigError(f"compare_to={folder}: no targets.csv there (a fit run with targets.path=)")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    try:
        return [{k: v if k == "target" else float(v) for k, v in r.items()} for r in rows]
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"{path}: not a targets table ({err}); expected the columns {TABLE_COLUMNS}"
        ) from None


def compare_targets(out_dir: Path, other: Path, strategy: str, plot: bool) -> str:
    """This run's table beside ``other``'s on their common targets: the difference of the validation
    totals in units of its SE, and the simulations each spent; comparison.csv (and .png)."""
    mine = {r["target"]: r for r in read_table(out_dir)}
    theirs = {r["target"]: r for r in read_table(other)}
    names = [n for n in mine if n in theirs]
    if not names:
        raise ConfigError(f"compare_to={other}: no target in common with this run")
    head = f"{'target':<22}{'this run':>18}{'compare_to':>18}{'diff / SE':>10}{'sims':>8}{'theirs':>8}"
    text, lines = [f"against {other}:", head], ["target,this_total,this_se,their_total,their_se,diff_se"]
    diffs = []
    for n in names:
        a, b = mine[n], theirs[n]
        se = float(np.hypot(a["vali_se"], b["vali_se"]))
        diff = (a["vali_total"] - b["vali_total"]) / se if se > 0 else float("nan")
        diffs.append(a["vali_total"] - b["vali_total"])
        text.append(
            f"{n:<22}{a['vali_total']:>10.4f} +- {a['vali_se']:.4f}{b['vali_total']:>10.4f} +- "
            f"{b['vali_se']:.4f}{diff:>10.1f}{int(a['simulations']):>8}{int(b['simulations']):>8}"
        )
        lines.append(
            f"{n},{a['vali_total']:.6g},{a['vali_se']:.6g},{b['vali_total']:.6g},{b['vali_se']:.6g},{diff:.4g}"
        )
    d = np.asarray(diffs)
    se_mean = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    sims = [int(sum(fit[n]["simulations"] for n in names)) for fit in (mine, theirs)]
    text.append(
        f"mean difference (this - compare_to) {d.mean():+.4f} +- {se_mean:.4f} (SE over {len(d)} targets); "
        f"simulations {sims[0]} against {sims[1]}"
    )
    atomic_write_bytes(out_dir / "comparison.csv", ("\n".join(lines) + "\n").encode())
    if plot:
        both = [[mine[n] for n in names], [theirs[n] for n in names]]
        _plot(out_dir, names, both, [strategy, other.name])
    return "\n".join(text)


def _plot(out_dir: Path, names: list[str], fits: list[list[dict]], labels: list[str]) -> None:
    def column(key):
        return np.asarray([[r[key] for r in rows] for rows in fits], dtype=np.float64)  # (F, T)

    totals, se, truth = column("vali_total"), column("vali_se"), column("truth_total")[0]
    plot_targets(names, totals, se, truth, out_dir / "targets.png", labels)
