"""Is the surrogate strategy's chosen set as good as the simulator strategy's?

Each fit's chosen set (rank 1 of its results.csv) is simulated again with fresh, independent noise
on the validation split, ``study.repeats`` per group, ``study.groups`` groups, costed per group ("fit"
stage: a term without a valid repeat costs 10, docs/cost.md#repeats-and-validity). Printed and
written (fit_acceptance.json): mean +- standard error over the groups, the difference in standard
errors, and each fit's total simulations from its summary.json. Pass: surrogate mean <= simulator
mean + 2 SE (SE of the difference) while the surrogate fit used fewer simulations in total.

With ``study.targets=<folder of targets>`` the runs are many-target fits (``targets.path=``): per
target, every run's chosen set and a synthetic subject's truth are re-simulated on that target's
split in the same groups of noise, and the runs are compared over the targets
(fit_acceptance_targets.csv and .png; ``many_targets`` below).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from pmfm.data.targets import find_targets
from pmfm.datasets.store import atomic_write_bytes
from pmfm.evaluate import grouped_costs, mean_and_se
from pmfm.pipelines.config import ConfigError, load_data, simulator_of, variant_of
from pmfm.pipelines.fit.targets import read_table
from pmfm.pipelines.progress import progress_bar
from pmfm.pipelines.results import read_results
from pmfm.plots import plot_targets
from pmfm.sim.protocol import protocol_for_run
from pmfm.studies.report import write_json, write_table

TRUTH_MARGIN = 0.1  # a synthetic subject's fit counts as near its truth within this of the truth's total


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Re-simulate every fit's chosen set; compare each surrogate fit with the simulator fit."""
    s = cfg.study
    if not s.simulator_run or not s.surrogate_runs:
        raise ConfigError(
            "study=fit_acceptance needs study.simulator_run=<run folder> and "
            "'study.surrogate_runs=[<run folder>, ...]' (pmfm.fit run folders)"
        )
    if s.targets:
        return many_targets(cfg, out_dir)
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


def many_targets(cfg: DictConfig, out_dir: Path) -> dict:
    """Per target of ``study.targets``: each run's chosen set and the truth re-simulated in the same
    ``study.groups`` noise groups; each run against the simulator run over the targets."""
    s = cfg.study
    folders = [Path(s.simulator_run), *(Path(f) for f in s.surrogate_runs)]
    labels = _labels(folders)
    tables = {
        label: {r["target"]: r for r in read_table(f)} for label, f in zip(labels, folders, strict=True)
    }
    targets = [t for t in find_targets(s.targets) if t.name in tables[labels[0]]]
    if not targets:
        raise ConfigError(
            f"study.targets={s.targets}: none of its targets is in {folders[0] / 'targets.csv'}"
        )
    for label, f in zip(labels, folders, strict=True):
        missing = [t.name for t in targets if t.name not in tables[label]]
        if missing:
            raise ConfigError(
                f"{f / 'targets.csv'}: no row for {', '.join(missing)} (fitted in {folders[0]})"
            )
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    groups, repeats, seed = int(s.groups), int(s.repeats), int(s.seed)
    n_sets = len(folders) * len(targets) + sum(t.truth is not None for t in targets)
    report: dict = {"repeats_per_group": repeats, "groups": groups, "seed": seed, "split": s.split,
                    "runs": dict(zip(labels, map(str, folders), strict=True)), "targets": {}}  # fmt: skip
    with progress_bar(n_sets * groups * repeats, "fit_acceptance", enabled=cfg.progress) as bar:
        for target in targets:
            sim = dataclasses.replace(
                simulator, protocol=protocol_for_run(target.n_tr, target.tr_s, simulator.protocol)
            )
            load = dict(window=variant.window, n_bins=variant.n_bins)
            space = sim.param_space(target.load("train", **load))  # the fits': the train split's covariates
            data = target.load(s.split, **load)
            sets = {label: read_results(f / target.name / "results.csv", space).theta[0].numpy()
                    for label, f in zip(labels, folders, strict=True)}  # fmt: skip
            if target.truth is not None:
                sets["truth"] = np.asarray(target.truth, dtype=np.float64)
            entry = {}
            for label, theta in sets.items():
                saved = out_dir / "sets" / f"{target.name}__{label}.json"  # a killed study resumes here
                done = json.loads(saved.read_text()) if saved.is_file() else {}
                if done.get("theta") == theta.tolist():
                    totals = done["group_totals"]
                    bar.update(groups * repeats)
                else:
                    totals = grouped_costs(
                        theta[None], space, data, sim.for_evaluation(), group_size=repeats, n_groups=groups,
                        seed=seed, variant=variant, stage="fit", progress=bar.update,
                    )["total"][0].tolist()  # fmt: skip
                    saved.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_bytes(
                        saved, json.dumps({"theta": theta.tolist(), "group_totals": totals}).encode()
                    )
                mean, se, _ = mean_and_se(np.asarray(totals))
                entry[label] = {"theta": theta.tolist(), "group_totals": totals, "mean": mean, "se": se}
                if label != "truth":
                    entry[label]["simulations"] = int(tables[label][target.name]["simulations"])
            report["targets"][target.name] = entry
    report["comparison"] = {
        label: _against_simulator(report["targets"], labels[0], label) for label in labels[1:]
    }
    rows = _table(report["targets"], labels)
    write_table(rows, out_dir / "fit_acceptance_targets.csv")
    print(_text(report, labels))
    if cfg.plot:
        names = list(report["targets"])

        def column(label, key):  # noqa: E306
            return [report["targets"][n].get(label, {}).get(key, float("nan")) for n in names]

        plot_targets(
            names, np.asarray([column(label, "mean") for label in labels]),
            np.asarray([column(label, "se") for label in labels]), np.asarray(column("truth", "mean")),
            out_dir / "fit_acceptance_targets.png", labels,
        )  # fmt: skip
    path = write_json(report, out_dir / "fit_acceptance.json", s.out, indent=1)
    print(f"saved {path}" + (f" and {s.out}" if s.out else ""))
    return report


def _labels(folders: list[Path]) -> list[str]:
    """Each run's folder name; the position where two share a name."""
    names = [f.name for f in folders]
    return (
        names
        if len(set(names)) == len(names) and "truth" not in names
        else [f"run_{i}" for i in range(len(names))]
    )


def _against_simulator(targets: dict, simulator: str, label: str) -> dict:
    """``label``'s run against the simulator run: per-target differences in SE, their mean over targets,
    and how many synthetic subjects came within TRUTH_MARGIN of their truth."""
    diffs, within, near, synthetic = [], 0, 0, 0
    for entry in targets.values():
        a, b = entry[label], entry[simulator]
        se = math.hypot(a["se"], b["se"])
        a["difference"] = a["mean"] - b["mean"]
        a["difference_in_se"] = a["difference"] / se if se > 0 else float("nan")
        within += bool(a["difference"] <= 2 * se)
        diffs.append(a["difference"])
        if "truth" in entry:
            synthetic += 1
            for e in (a, b):
                e["minus_truth"] = e["mean"] - entry["truth"]["mean"]
            near += bool(a["minus_truth"] <= TRUTH_MARGIN)
    d = np.asarray(diffs)
    se_mean = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    sims = [sum(e[x]["simulations"] for e in targets.values()) for x in (label, simulator)]
    return {
        "mean_difference": float(d.mean()),
        "mean_difference_se": se_mean,
        "targets": len(d),
        "within_2se": within,
        "near_truth": near,
        "near_truth_of": synthetic,
        "simulator_near_truth": sum(
            bool(e[simulator]["minus_truth"] <= TRUTH_MARGIN) for e in targets.values() if "truth" in e
        ),
        "simulations": sims[0],
        "simulator_simulations": sims[1],
    }


def _table(targets: dict, labels: list[str]) -> list[dict]:
    rows = []
    for name, entry in targets.items():
        truth = entry.get("truth", {})
        row = {
            "target": name,
            "truth_mean": truth.get("mean", float("nan")),
            "truth_se": truth.get("se", float("nan")),
        }
        for label in labels:
            e = entry[label]
            row |= {
                f"{label}_mean": e["mean"],
                f"{label}_se": e["se"],
                f"{label}_simulations": e["simulations"],
            }
            if "difference" in e:
                row |= {
                    f"{label}_minus_{labels[0]}": e["difference"],
                    f"{label}_in_se": e["difference_in_se"],
                }
        rows.append(row)
    return rows


def _text(report: dict, labels: list[str]) -> str:
    r, g = report["repeats_per_group"], report["groups"]
    lines = [f"{'target':<22}{'truth':>18}" + "".join(f"{label[:20]:>22}" for label in labels)]
    for name, entry in report["targets"].items():
        cells = [entry.get("truth"), *(entry[label] for label in labels)]
        lines.append(f"{name:<22}" + f"{_cell(cells[0]):>18}" + "".join(f"{_cell(c):>22}" for c in cells[1:]))
    lines.append(f"(mean +- SE over {g} groups of R = {r}, fresh noise, the same for every set of a target)")
    for label, c in report["comparison"].items():
        lines.append(
            f"{label} - {labels[0]}: mean {c['mean_difference']:+.4f} +- {c['mean_difference_se']:.4f} "
            f"(SE over {c['targets']} targets); within 2 SE or better on {c['within_2se']} of "
            f"{c['targets']}; "
            f"within {TRUTH_MARGIN} of the truth on {c['near_truth']} of {c['near_truth_of']} "
            f"({labels[0]}: {c['simulator_near_truth']}); simulations {c['simulations']} against "
            f"{c['simulator_simulations']}"
        )
    return "\n".join(lines)


def _cell(e: dict | None) -> str:
    return "" if e is None else f"{e['mean']:.4f} +- {e['se']:.4f}"
