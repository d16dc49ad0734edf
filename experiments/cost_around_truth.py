"""How narrow a synthetic subject's basin is: the training total (R = 3) at its truth and at sets a
normalised distance r from it along 8 random directions, for each r in RADII.

    python experiments/cost_around_truth.py outputs/targets/acceptance synthetic_002 synthetic_009
"""

import sys

import numpy as np
import torch
from hydra import compose, initialize_config_module

from pmfm.data.targets import find_targets
from pmfm.evaluate.objective import SimulatorObjective
from pmfm.pipelines.config import load_data, simulator_of, variant_of

RADII = (0.03, 0.06, 0.12)  # normalised distance (each parameter's range is 1)
DIRECTIONS = 8


def main(folder: str, names: list[str]) -> None:
    with initialize_config_module("pmfm.conf", version_base=None):
        cfg = compose("fit")
    simulator = simulator_of(cfg)
    variant = variant_of(cfg, simulator)
    space = simulator.param_space(load_data(cfg.data, simulator, variant))
    d = torch.from_numpy(np.random.default_rng(0).standard_normal((DIRECTIONS, space.dim)))
    d = d / d.norm(dim=1, keepdim=True)  # (D, P) unit directions
    print(f"training total (R = 3), {DIRECTIONS} directions: median [min, max]; 20 = infeasible or invalid")
    for target in find_targets(folder):
        if target.truth is None or (names and target.name not in names):
            continue
        truth = space.normalise(torch.as_tensor(target.truth)).double().reshape(1, -1)  # (1, P)
        u = torch.cat([truth] + [truth + r * d for r in RADII])  # (1 + D len(RADII), P)
        objective = SimulatorObjective(space, target.load("train"), simulator, seed=1, variant=variant)
        total = objective(space.denormalise(u), keys=torch.arange(len(u))).total.numpy()
        rings = total[1:].reshape(len(RADII), DIRECTIONS)  # (radii, D)
        cells = []
        for r, t in zip(RADII, rings, strict=True):
            cells.append(f"r={r}: {np.median(t):.3f} [{t.min():.3f}, {t.max():.3f}]")
        print(f"{target.name:<15} truth {total[0]:.3f}  " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
