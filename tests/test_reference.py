"""The published numbers: the Kong2021 example sets simulated with the full protocol (docs/fitting.md).

Each set is simulated in n independent 3-repeat groups on the training data. Per set the mean total
must lie within 3 * sd * sqrt(1/n + 1/12) of the reference mean (12 groups on an H200: 1.31 +- 0.16,
1.27 +- 0.06, 1.28 +- 0.19, 1.24 +- 0.08, 1.25 +- 0.08), and the five differences must average
within 0.08 of zero. This takes a few minutes on 2 cores: it is the check that the model is right.
"""

import math

import numpy as np
import pytest
import torch

from pmfm.data import bundled_path, load_bundled
from pmfm.evaluate import evaluate_params
from pmfm.params import ParamSpace, read_params_csv
from pmfm.sim import SimProtocol
from pmfm.sim.simulator import Simulator

REF_MEAN = np.array([1.31, 1.27, 1.28, 1.24, 1.25])
REF_SD = np.array([0.16, 0.06, 0.19, 0.08, 0.08])
N_GROUPS = 8  # independent 3-repeat groups per set
REPEATS = 3


@pytest.fixture(scope="module")
def setup():
    data = load_bundled("train")
    space = ParamSpace(data.basis())
    theta = read_params_csv(bundled_path().parent / "kong2021_example.csv", space)
    return data, space, theta


@pytest.mark.parametrize(
    ("method", "dtype", "seed"),
    [
        ("euler", torch.float32, 11),
        ("euler", torch.float64, 12),
        ("torchdiffeq", torch.float32, 13),
    ],
)
def test_example_sets_reproduce_published_costs(setup, method, dtype, seed):
    data, space, theta = setup
    simulator = Simulator(protocol=SimProtocol(), method=method, dtype=dtype)
    # each set repeated N_GROUPS times: groups of 3 repeats with independent noise
    result = evaluate_params(
        theta.repeat_interleave(N_GROUPS, dim=0), space, data, simulator, repeats=REPEATS, seed=seed
    )
    costs = result.costs
    assert int(costs.n_valid().min()) == REPEATS, "no run may be lost to NaN (H is evaluated stably)"
    totals = costs.total.reshape(5, N_GROUPS).numpy()
    means = totals.mean(axis=1)
    tolerance = 3 * REF_SD * math.sqrt(1 / N_GROUPS + 1 / 12)
    report = ", ".join(
        f"{m:.3f} (ref {r:.2f} +- {t:.3f})" for m, r, t in zip(means, REF_MEAN, tolerance, strict=True)
    )
    assert np.all(np.abs(means - REF_MEAN) <= tolerance), report
    assert abs(np.mean(means - REF_MEAN)) <= 0.08, report
    # the spread across groups is the published repeat-to-repeat spread, not far off it
    assert np.all(totals.std(axis=1, ddof=1) < 3 * REF_SD), totals.std(axis=1, ddof=1)
