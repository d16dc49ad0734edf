"""Simulate parameter sets, print their costs, save what they made (``python -m pmfm.simulate``).

Writes to the run folder: costs.csv (one row per set, input order: fc_cost, fc_l1, ks, total,
n_valid), bold.npz, fc.npy and fcd_cdf.npy per repeat, and fc_fcd.png.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from pmfm.cost import Costs, RepeatStats
from pmfm.data import bundled_path
from pmfm.evaluate import evaluate_params
from pmfm.params import ParamError, read_params_csv
from pmfm.pipelines.config import load_data, simulator_of, variant_of
from pmfm.pipelines.progress import progress_bar
from pmfm.pipelines.results import read_results
from pmfm.plots import plot_fc_fcd

log = logging.getLogger(__name__)
COST_COLUMNS = ("fc_cost", "fc_l1", "ks", "total", "n_valid")  # other tools read these names


def simulate_sets(cfg: DictConfig, out_dir: Path) -> float:
    """Simulate, cost and report; returns the mean total cost over the sets."""
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    data = load_data(cfg.data, simulator, variant)
    space = simulator.param_space(data, mode=cfg.param_space)
    coefficients = simulator.param_space(data)
    if cfg.params_csv and cfg.get("params_layout", "rows") == "test_all":
        theta = read_results(cfg.params_csv, coefficients).theta  # (K, 10), a fit's results.csv
        if space.mode == "regional":
            theta = coefficients.regional(theta).flat()
    elif cfg.params_csv:
        theta = read_params_csv(cfg.params_csv, space)
    elif simulator.circuit == "fic":  # no published example: a least-squares random start (docs/fic.md)
        theta = coefficients.random_start(1, np.random.default_rng(cfg.example))
        if space.mode == "regional":
            theta = coefficients.regional(theta).flat()
    else:
        example = read_params_csv(bundled_path().parent / "kong2021_example.csv", coefficients)
        if not 1 <= cfg.example <= len(example):
            raise ParamError(f"example={cfg.example}: the bundled example has sets 1..{len(example)}")
        theta = example[cfg.example - 1 : cfg.example]
        if space.mode == "regional":
            theta = coefficients.regional(theta).flat()
    log.info(
        "%d set(s) x R=%d on %s/%s, %s", len(theta), cfg.repeats, data.name, data.split, simulator.describe()
    )
    with progress_bar(len(theta) * cfg.repeats, "simulate", enabled=cfg.progress) as bar:
        result = evaluate_params(
            theta, space, data, simulator, repeats=cfg.repeats, seed=cfg.seed, variant=variant,
            keep_stats=True, keep_bold=cfg.save_bold, progress=bar.update,
        )  # fmt: skip
    stats = result.stats
    assert stats is not None  # asked for with keep_stats
    write_outputs(result.costs, stats, result.bold, out_dir)
    print(cost_table(result.costs, variant.name))
    if cfg.plot:
        plot_fc_fcd(stats, data, cfg.repeats, variant, out_dir / "fc_fcd.png")
    return float(result.costs.total.mean())


def cost_table(c: Costs, variant: str) -> str:
    """A plain-text table of each set's costs."""
    lines = [
        f"costs ({variant}, R = {c.repeats} repeats per set; lower is better)",
        f"{'set':>4} {'fc_cost':>9} {'fc_l1':>9} {'ks':>9} {'total':>9} {'n_valid':>8}",
    ]
    for i in range(len(c)):
        lines.append(
            f"{i + 1:>4} {c.fc_cost[i]:9.4f} {c.fc_l1[i]:9.4f} {c.ks[i]:9.4f} {c.total[i]:9.4f} "
            f"{int(c.n_valid()[i]):>5}/{c.repeats}"
        )
    return "\n".join(lines)


def write_outputs(c: Costs, stats: RepeatStats, bold: torch.Tensor | None, out_dir: Path) -> None:
    """costs.csv (input order; R is in the run's config), per-repeat FC and FCD CDF, BOLD when kept."""
    table = np.column_stack([c.fc_cost, c.fc_l1, c.ks, c.total, c.n_valid()])
    np.savetxt(
        out_dir / "costs.csv",
        table,
        delimiter=",",
        header=",".join(COST_COLUMNS),
        comments="",
        fmt=["%.8g"] * 4 + ["%d"],
    )
    n_sets, r = len(c), c.repeats
    np.save(out_dir / "fc.npy", stats.fc.reshape(n_sets, r, -1).numpy())
    np.save(out_dir / "fcd_cdf.npy", stats.cdf.reshape(n_sets, r, -1).numpy())
    if bold is not None:
        np.savez_compressed(out_dir / "bold.npz", bold=bold.to(torch.float32).numpy())
