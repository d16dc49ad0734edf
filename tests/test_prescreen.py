"""Surrogate pre-screening of the simulator-in-the-loop CMA-ES (pmfm/search/prescreen.py)."""

import numpy as np
import pytest
import torch
from test_search import BoxSpace, P, checked, small_settings, sphere

from pmfm.evaluate import FunctionObjective
from pmfm.search import MultiStartCMAES
from pmfm.search.prescreen import UNSIMULATED_GAP, PrescreenedObjective


def test_only_each_blocks_best_scored_sets_are_simulated_and_the_rest_rank_behind():
    space = BoxSpace(-5.0, 5.0)
    calls = []
    true = FunctionObjective(space, checked(space, sphere(np.zeros(P)), calls), with_context=True)
    score = FunctionObjective(space, lambda theta: -theta[:, 0])  # ranks by the first coordinate only
    screened = PrescreenedObjective(true, score, group_size=6, simulate_top=2)
    theta = torch.rand(18, P, dtype=torch.float64) * 4 - 2  # 3 blocks of 6
    keys = torch.arange(100, 118)
    out = screened(theta, keys=keys, generation=7)

    assert len(calls) == 1 and calls[0][0] == 6 and calls[0][2] == 7  # one call, 3 blocks x 2 sets
    expected = torch.cat([b * 6 + (-theta[b * 6 : b * 6 + 6, 0]).argsort()[:2] for b in range(3)])
    torch.testing.assert_close(calls[0][1], keys[expected])  # the chosen sets' own sample ids
    torch.testing.assert_close(out.total[expected], (theta[expected] ** 2).sum(1))  # simulated: true values
    assert int(out.valid.sum()) == 6 and bool(out.valid[expected].all())
    for b in range(3):
        block = slice(b * 6, b * 6 + 6)
        simulated = torch.isin(torch.arange(b * 6, b * 6 + 6), expected)
        rest = out.total[block][~simulated]
        assert rest.min() >= out.total[block][simulated].max() + UNSIMULATED_GAP  # behind every simulated set
        order = (-theta[block, 0][~simulated]).argsort()
        assert bool((rest[order].diff() > 0).all())  # and in the surrogate's order
    assert screened.simulated_sets == 6 and screened.scored_sets == 18
    with pytest.raises(ValueError, match="whole blocks"):
        screened(theta[:10])
    with pytest.raises(ValueError, match="simulate_top"):
        PrescreenedObjective(true, score, group_size=6, simulate_top=7)


def test_prescreened_cmaes_with_a_rough_surrogate_converges_on_simulated_values_only():
    space = BoxSpace(-5.0, 5.0)
    centre = torch.linspace(-1, 1, P, dtype=torch.float64)
    calls = []
    true = FunctionObjective(space, checked(space, sphere(centre), calls), with_context=True)
    gen = torch.Generator().manual_seed(0)

    def rough(theta):  # the truth, a tilt and multiplicative noise: ranks well, not exactly
        return sphere(centre)(theta) * (1 + 0.3 * torch.rand(len(theta), generator=gen)) + 0.05 * theta[:, 0]

    screened = PrescreenedObjective(true, FunctionObjective(space, rough), group_size=24, simulate_top=8)
    settings = small_settings(popsize=24, mu=4, max_generations=60, stop_cost=-1, sigma0=0.5, sigma_cap=0.5)
    search = MultiStartCMAES(screened, torch.full((2, P), 2.0), settings, seed=3, stds=np.ones((2, P)))
    history = search.run()
    assert screened.simulated_sets == sum(n for n, _, _ in calls) == 2 * 8 * search.generation
    for per_start in history:
        for kept in per_start:  # every generation's kept best is a simulated set, with its true value
            assert kept.total == pytest.approx(float(((kept.theta - centre) ** 2).sum()), rel=1e-12)
        assert min(b.total for b in per_start) < 1e-3
