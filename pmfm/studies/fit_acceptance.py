"""Is the surrogate strategy's chosen set as good as the simulator strategy's?

Each fit's chosen set (rank 1 of its results.csv) is simulated again with fresh, independent noise
on the validation split, ``study.repeats`` per group, ``study.groups`` groups, costed per group ("fit"
stage: a term without a valid repeat costs 10, docs/cost.md#repeats-and-validity). Printed and
written (fit_acceptance.json): mean +- standard error over the groups, the difference in standard
errors, and each fit's total simulations from its summary.json. Pass: surrogate mean <= simulator
mean + 2 SE (SE of the difference) while the surrogate fit used fewer simulations in total.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from omegaconf import DictConfig

from pmfm.evaluate import grouped_costs, mean_and_se
from pmfm.pipelines.config import ConfigError, load_data, simulator_of, variant_of
from pmfm.pipelines.progress import progress_bar
from pmfm.pipelines.results import read_results
from pmfm.studies.report import write_json


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Re-simulate every fit's chosen set; compare each surrogate fit with the simulator fit."""
    s = cfg.study
    if not s.simulator_run or not s.surrogate_runs:
        raise ConfigError(
            "study=fit_acceptance needs study.simulator_run=<run folder> and "
            "'study.surrogate_runs=[<run folder>, ...]' (pmfm.fit run folders)"
        )
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    space = simulator.param_space(load_data(cfg.data, simulator, variant))  # the training data's, as the fits
    vali = load_data(cfg.data, simulator, variant, split=s.split)
    report: dict = {
        "repeats_per_group": int(s.repeats),
        "groups": int(s.groups),
        "seed": int(s.seed),
        "device": f"{simulator.device} ({simulator.resolved_method})",
    }
    runs = [("simulator", Path(s.simulator_run))]
    runs += [(f"surrogate_{i + 1}", Path(f)) for i, f in enumerate(s.surrogate_runs)]
    with progress_bar(
        len(runs) * int(s.groups) * int(s.repeats), "fit_acceptance", enabled=cfg.progress
    ) as bar:
        for name, folder in runs:
            theta = read_results(folder / "results.csv", space).theta[:1]  # (1, P): the chosen set
            tic = time.perf_counter()
            groups = grouped_costs(
                theta, space, vali, simulator, group_size=int(s.repeats), n_groups=int(s.groups),
                seed=int(s.seed), variant=variant, stage="fit", progress=bar.update,
            )["total"][0]  # fmt: skip
            mean, se, n = mean_and_se(groups)
            summary = json.loads((folder / "summary.json").read_text())
            report[name] = {
                "run": str(folder),
                "theta": theta[0].tolist(),
                "group_totals": groups.tolist(),
                "mean": mean,
                "se": se,
                "finite_groups": n,
                "total_simulations": summary["total"]["simulations"],
                "fit_wall_s": summary["total"]["wall_s"],
                "resimulation_wall_s": time.perf_counter() - tic,
            }
            print(f"{name:>11}: {mean:.4f} +- {se:.4f} (SE, {n} groups of R = {s.repeats}); "
                  f"fit used {summary['total']['simulations']} simulations")  # fmt: skip
    sim = report["simulator"]
    for name, _ in runs[1:]:
        sur = report[name]
        se_diff = math.hypot(sim["se"], sur["se"])
        sur["difference"] = sur["mean"] - sim["mean"]
        sur["difference_in_se"] = sur["difference"] / se_diff if se_diff > 0 else float("nan")
        sur["pass_quality"] = bool(sur["mean"] <= sim["mean"] + 2 * se_diff)
        sur["pass_simulations"] = bool(sur["total_simulations"] < sim["total_simulations"])
        print(
            f"{name} - simulator = {sur['difference']:+.4f} "
            f"({sur['difference_in_se']:+.2f} SE of the difference); "
            f"quality {'PASS' if sur['pass_quality'] else 'FAIL'}, "
            f"fewer simulations {'PASS' if sur['pass_simulations'] else 'FAIL'}"
        )
    path = write_json(report, out_dir / "fit_acceptance.json", s.out, indent=1)
    print(f"saved {path}" + (f" and {s.out}" if s.out else ""))
    return report
