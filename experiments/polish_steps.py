"""Where a short polish's steps land: 16 CMA-ES samples from each subject's best bank row (by cost from
its stored statistics), with Kong's diagonal steps (sigma0 0.05) and with steps shaped by the bank's
emulator at several ``shape_step`` values, each sample's training total (R = 3, one noise draw for
all) against the row's own, the same 16 normal draws for every shape.

    python experiments/polish_steps.py <bank> outputs/targets/acceptance synthetic_005 synthetic_009
"""

import sys
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module

from pmfm.cost import fcd_pair_count
from pmfm.cost.stats import cost_from_stats
from pmfm.data.targets import find_targets
from pmfm.datasets.bank import Bank, bank_stats
from pmfm.evaluate.objective import SimulatorObjective
from pmfm.models.emulator import EmulatorModule, statistics_metric
from pmfm.pipelines.config import load_data, simulator_of, variant_of
from pmfm.search.cmaes import kong_stds
from pmfm.search.emulated import shaped_covariances

SIGMA0 = 0.05  # the polish's (strategy.cmaes.sigma0)
SHAPE_STEPS = (0.1, 0.3, 1.0)
SAMPLES = 16


def main(bank_folder: str, targets: str, names: list[str]) -> None:
    with initialize_config_module("pmfm.conf", version_base=None):
        cfg = compose("fit")
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    space = simulator.param_space(load_data(cfg.data, simulator, variant))
    emulator = EmulatorModule.load_from_checkpoint(Path(bank_folder) / "emulator.ckpt", map_location="cpu")
    bank = Bank(bank_folder)
    rows = bank.load([p.name for p in bank.parts() if not p.name.startswith("polish_")])
    stats = bank_stats(rows, fcd_pair_count(simulator.protocol.n_tr, variant.window))
    z = torch.from_numpy(np.random.default_rng(0).standard_normal((SAMPLES, space.dim)))  # (16, P)
    per_unit = (space.normalise(torch.ones(1, space.dim)) - space.normalise(torch.zeros(1, space.dim)))[0]
    print(f"training total (R = 3) of {SAMPLES} samples: median, best, how many below the start")
    for target in find_targets(targets):
        if names and target.name not in names:
            continue
        data = target.load("train")
        costs = cost_from_stats(stats, data.fc, data.fcd_cdf, variant, "fit").total.double()
        start = torch.from_numpy(rows["theta"][int(torch.nan_to_num(costs, nan=np.inf).argmin())]).double()
        kong = torch.from_numpy(kong_stds(start.numpy())) * SIGMA0  # (P,) raw
        sets = {"kong": start + z * kong}
        cap = float((kong * per_unit).median())
        for step in SHAPE_STEPS:
            root = torch.linalg.cholesky(
                shaped_covariances(space, emulator, start[None], step=step, cap=cap)[0]
            )
            sets[f"shaped {step}"] = start + z @ root.T
        theta = torch.cat([start[None], *sets.values()])
        feasible = space.is_feasible(theta)
        objective = SimulatorObjective(space, data, simulator, seed=1, variant=variant)
        total = torch.full((len(theta),), float("nan"), dtype=torch.float64)
        total[feasible] = objective(theta[feasible], keys=torch.arange(int(feasible.sum()))).total.double()
        values = torch.linalg.eigvalsh(statistics_metric(emulator, space.normalise(start[None]))[0])
        print(f"{target.name}: start {total[0]:.3f}; metric eigenvalues {values[0]:.1e} .. {values[-1]:.1e}")
        for i, name in enumerate(sets):
            t = total[1 + i * SAMPLES : 1 + (i + 1) * SAMPLES].numpy()
            below = int((t < total[0].item()).sum())
            print(f"  {name:<12} median {np.nanmedian(t):.3f}  best {np.nanmin(t):.3f}  below {below:2d}"
                  f"  infeasible {int(np.isnan(t).sum())}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
