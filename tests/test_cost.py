"""pmfm.cost against plain numpy (np.corrcoef per window, np.histogram, explicit formulas).

docs/cost.md: FC cost, FCD CDF in counts, KS, FC L1, validity per term, the 10 rule in "fit" and
NaN in "test", the Kong2021 and DELSSOME variants.
"""

import dataclasses

import numpy as np
import pytest
import torch

from pmfm.cost import (
    DELSSOME,
    KONG2021,
    Costs,
    RepeatStats,
    combine_repeats,
    cost_variant,
    cumulative_histogram,
    evaluate,
    fc_matrix,
    fcd_cdf,
    fcd_matrix,
    fcd_pair_count,
    repeat_stats,
    upper_triangle,
    window_fc,
)

# ---------------------------------------------------------------------------------------------
# Plain numpy references: one simulation at a time, one window at a time
# ---------------------------------------------------------------------------------------------


def np_upper(mat):
    return mat[np.triu_indices(mat.shape[0], 1)]


def np_window_fc(bold, window):  # (N, T) -> (W, E)
    n_windows = bold.shape[1] - window + 1
    return np.stack([np_upper(np.corrcoef(bold[:, w : w + window])) for w in range(n_windows)])


def np_fcd(bold, window):  # (N, T) -> (W, W)
    return np.corrcoef(np_window_fc(bold, window))


def np_cdf(values, variant):
    counts, _ = np.histogram(values, variant.n_bins, (variant.hist_min, variant.hist_max))
    return counts.cumsum()


def np_group_costs(fcs, cdfs, emp_fc, emp_cdf, variant):
    """Explicit docs/cost.md formulas for one group of already-valid repeats."""
    emp = np_upper(emp_fc)
    mean_fc = np.mean(fcs, axis=0)
    f = (lambda r: np.arctanh(np.clip(r, -1 + 1e-7, 1 - 1e-7))) if variant.fisher_z else (lambda r: r)
    fc_cost = 1 - np.corrcoef(f(mean_fc), f(emp))[0, 1]
    fc_l1 = abs(mean_fc.mean() - emp.mean())
    ks = np.max(np.abs(np.mean(cdfs, axis=0) - emp_cdf)) / emp_cdf[-1]
    total = fc_cost + ks + (fc_l1 if variant.use_l1 else 0.0)
    return fc_cost, fc_l1, ks, total


def random_bold(b=3, n=10, t=90, dtype=torch.float64):
    """Random BOLD with shared slow fluctuations, so FC and FCD are not all near 0."""
    common = torch.randn(b, 1, t, dtype=dtype).cumsum(-1) * 0.3
    mixing = torch.rand(b, n, 1, dtype=dtype)
    return mixing * common + torch.randn(b, n, t, dtype=dtype)


SMALL = cost_variant("kong2021", window=15)


# ---------------------------------------------------------------------------------------------
# FC, window FC, FCD
# ---------------------------------------------------------------------------------------------


def test_upper_triangle_matches_triu_indices():
    mat = np.random.default_rng(0).normal(size=(2, 3, 7, 7))
    out = upper_triangle(torch.from_numpy(mat))
    assert out.shape == (2, 3, 21)
    np.testing.assert_array_equal(out.numpy(), mat[(..., *np.triu_indices(7, 1))])
    np.testing.assert_array_equal(upper_triangle(mat[0, 0]).numpy(), np_upper(mat[0, 0]))


def test_fc_matrix_matches_corrcoef():
    bold = random_bold(3, 11, 100)
    fc = fc_matrix(bold)
    assert fc.shape == (3, 11, 11) and fc.dtype == torch.float64
    for b in range(3):
        np.testing.assert_allclose(fc[b].numpy(), np.corrcoef(bold[b].numpy()), atol=1e-10)


@pytest.mark.parametrize("window", [10, 17])
def test_window_fc_matches_loop_of_corrcoef(window):
    bold = random_bold(3, 9, 80)
    wfc = window_fc(bold, window)
    assert wfc.shape == (3, 80 - window + 1, 36)
    for b in range(3):
        np.testing.assert_allclose(wfc[b].numpy(), np_window_fc(bold[b].numpy(), window), atol=1e-10)


def test_window_fc_leaves_input_untouched_when_one_window():
    bold = random_bold(2, 6, 20)
    before = bold.clone()
    wfc = window_fc(bold, 20)  # W = 1: the unfold view is contiguous, must still be copied
    assert torch.equal(bold, before)
    np.testing.assert_allclose(wfc[:, 0].numpy(), upper_triangle(fc_matrix(bold)).numpy(), atol=1e-12)


def test_fcd_matrix_matches_numpy():
    bold = random_bold(3, 10, 90)
    fcd = fcd_matrix(bold, 15)
    assert fcd.shape == (3, 76, 76)
    for b in range(3):
        np.testing.assert_allclose(fcd[b].numpy(), np_fcd(bold[b].numpy(), 15), atol=1e-10)


# ---------------------------------------------------------------------------------------------
# Histogram / CDF: exact counts, numpy.histogram bin assignment
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [SMALL, dataclasses.replace(DELSSOME, window=15)])
def test_fcd_cdf_matches_numpy_pipeline(variant):
    bold = random_bold(3, 12, 110)
    cdf = fcd_cdf(bold, variant)
    assert cdf.shape == (3, variant.n_bins) and cdf.dtype == torch.int64
    n_pairs = fcd_pair_count(110, 15)
    for b in range(3):
        fcd = np_fcd(bold[b].numpy(), 15)
        expected = np_cdf(np_upper(fcd), variant)
        np.testing.assert_array_equal(cdf[b].numpy(), expected)
        assert cdf[b, -1] == n_pairs


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("lo,hi,n_bins", [(-0.9999, 1.0, 10_000), (-1.0, 1.0, 10_000), (-1, 1, 7)])
def test_cumulative_histogram_matches_numpy_on_edges(dtype, lo, hi, n_bins):
    rng = np.random.default_rng(0)
    edges = np.linspace(lo, hi, n_bins + 1).astype(dtype)
    picks = edges[rng.choice(len(edges), 3000)]
    near = np.concatenate(
        [picks, np.nextafter(picks, dtype(-2)), np.nextafter(picks, dtype(2))]
    )  # every edge case numpy's +-1 correction exists for
    special = np.array([lo, hi, -1.0, 1.0, -0.9999, 1.5, -1.5, np.nan, np.inf, -np.inf], dtype)
    rows = np.stack(
        [
            np.concatenate([near, special]),
            rng.uniform(-1.01, 1.01, near.size + special.size).astype(dtype),
        ]
    )  # (2, P)
    cdf = cumulative_histogram(torch.from_numpy(rows), lo, hi, n_bins)
    for b in range(2):
        finite = rows[b][np.isfinite(rows[b])]
        counts, _ = np.histogram(finite, n_bins, (lo, hi))
        np.testing.assert_array_equal(cdf[b].numpy(), counts.cumsum())


def test_hist_ranges_of_the_variants():
    values = torch.tensor([[-1.0, -0.99995, -0.9999, 0.0, 1.0]], dtype=torch.float64)
    kong = cumulative_histogram(values, KONG2021.hist_min, KONG2021.hist_max, KONG2021.n_bins)
    dels = cumulative_histogram(values, DELSSOME.hist_min, DELSSOME.hist_max, DELSSOME.n_bins)
    assert kong[0, -1] == 3  # -1 and -0.99995 lie left of -0.9999: not counted
    assert dels[0, -1] == 5  # [-1, 1] holds all of them
    assert kong[0, 0] == 1 and kong[0, -2] == 2  # -0.9999 in the first bin, 1.0 in the last
    assert dels[0, 0] == 3  # -1, -0.99995, -0.9999 share DELSSOME's first bin [-1, -0.9998)


def test_fcd_pair_count():
    assert fcd_pair_count(1200, 83) == 624_403  # docs/cost.md#fcd: 1,118 windows
    assert fcd_pair_count(90, 15) == 76 * 75 // 2
    assert fcd_pair_count(10, 10) == 0
    with pytest.raises(ValueError):
        fcd_pair_count(50, 60)


def test_full_size_cdf_ends_at_624403():
    bold = torch.randn(1, 68, 1200)  # float32, the production shape
    stats = repeat_stats(bold)
    assert stats.cdf.shape == (1, 10_000)
    assert stats.cdf[0, -1].item() == 624_403
    assert stats.fc.shape == (1, 2278)
    assert bool(stats.fc_valid[0]) and bool(stats.fcd_valid[0])


# ---------------------------------------------------------------------------------------------
# Per-repeat statistics: chunking, validity
# ---------------------------------------------------------------------------------------------


def test_chunking_gives_the_same_stats():
    bold = random_bold(5, 8, 70)
    variant = cost_variant("kong2021", window=12)
    ref = repeat_stats(bold, variant, chunk_size=16)
    for chunk in (1, 2, 3):
        out = repeat_stats(bold, variant, chunk_size=chunk)
        assert torch.equal(out.cdf, ref.cdf)
        torch.testing.assert_close(out.fc, ref.fc, atol=1e-14, rtol=0)
        assert torch.equal(out.fc_valid, ref.fc_valid) and torch.equal(out.fcd_valid, ref.fcd_valid)


def test_repeat_stats_match_numpy():
    bold = random_bold(3, 10, 80)
    stats = repeat_stats(bold, SMALL, chunk_size=2)
    for b in range(3):
        x = bold[b].numpy()
        np.testing.assert_allclose(stats.fc[b].numpy(), np_upper(np.corrcoef(x)), atol=1e-10)
        np.testing.assert_array_equal(stats.cdf[b].numpy(), np_cdf(np_upper(np_fcd(x, 15)), SMALL))
    assert stats.fc_valid.all() and stats.fcd_valid.all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_bold_is_flagged_not_raised(bad):
    bold = random_bold(4, 8, 60)
    clean = repeat_stats(bold, SMALL)
    bold[1, 3, 17] = bad
    stats = repeat_stats(bold, SMALL, chunk_size=4)  # the bad repeat shares a chunk with others
    assert stats.fc_valid.tolist() == [True, False, True, True]
    assert stats.fcd_valid.tolist() == [True, False, True, True]
    keep = [0, 2, 3]
    assert torch.equal(stats.cdf[keep], clean.cdf[keep])  # the offsets keep rows apart
    assert torch.equal(stats.fc[keep], clean.fc[keep])


# ---------------------------------------------------------------------------------------------
# Costs: formulas, validity, the 10 rule, variants
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def emp():
    """An empirical FC and FCD CDF from other random BOLD (as the real data come from subjects)."""
    bold = random_bold(1, 10, 80)
    emp_fc = np.corrcoef(bold[0].numpy())
    emp_cdf = np_cdf(np_upper(np_fcd(bold[0].numpy(), 15)), SMALL)
    return emp_fc, emp_cdf


@pytest.mark.parametrize("variant", [SMALL, dataclasses.replace(DELSSOME, window=15)])
def test_costs_match_explicit_formulas(variant, emp):
    emp_fc, emp_cdf = emp
    if variant.hist_min != SMALL.hist_min:  # the empirical CDF in the variant's own bins
        bold_e = random_bold(1, 10, 80)
        emp_fc = np.corrcoef(bold_e[0].numpy())
        emp_cdf = np_cdf(np_upper(np_fcd(bold_e[0].numpy(), 15)), variant)
    repeats, groups = 3, 2
    bold = random_bold(repeats * groups, 10, 80)
    costs = evaluate(bold, emp_fc, emp_cdf, repeats, variant, chunk_size=4)
    assert isinstance(costs, Costs) and costs.repeats == repeats and len(costs) == groups
    for name in ("fc_cost", "fc_l1", "ks", "total"):
        value = getattr(costs, name)
        assert value.dtype == torch.float64 and value.device.type == "cpu" and value.shape == (2,)
    for g in range(groups):
        sims = [bold[g * repeats + r].numpy() for r in range(repeats)]
        fcs = [np_upper(np.corrcoef(x)) for x in sims]
        cdfs = [np_cdf(np_upper(np_fcd(x, 15)), variant) for x in sims]
        expected = np_group_costs(fcs, cdfs, emp_fc, emp_cdf, variant)
        got = (costs.fc_cost[g], costs.fc_l1[g], costs.ks[g], costs.total[g])
        np.testing.assert_allclose([float(v) for v in got], expected, rtol=0, atol=1e-10)
    assert costs.n_valid_fc.tolist() == [3, 3] and costs.n_valid().tolist() == [3, 3]


def test_delssome_uses_raw_fc_and_l1():
    assert cost_variant("delssome") == DELSSOME
    assert not DELSSOME.fisher_z and DELSSOME.use_l1 and DELSSOME.hist_min == -1.0
    fc = torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.4, 0.95]], dtype=torch.float64)
    emp_fc = np.array([[1.0, 0.3, 0.6], [0.3, 1.0, 0.7], [0.6, 0.7, 1.0]])
    emp_cdf = np.array([0, 2, 3])
    cdf = torch.tensor([[1, 2, 3], [0, 1, 3]])
    stats = RepeatStats(fc, cdf, torch.ones(2, dtype=torch.bool), torch.ones(2, dtype=torch.bool))
    variant = dataclasses.replace(DELSSOME, n_bins=3)
    costs = combine_repeats(stats, emp_fc, emp_cdf, 2, variant)
    mean = fc.numpy().mean(0)
    emp = np.array([0.3, 0.6, 0.7])
    raw = 1 - np.corrcoef(mean, emp)[0, 1]
    l1 = abs(mean.mean() - emp.mean())
    ks = np.max(np.abs(np.array([0.5, 1.5, 3.0]) - emp_cdf)) / 3
    np.testing.assert_allclose(costs.fc_cost.numpy(), [raw], atol=1e-12)
    np.testing.assert_allclose(costs.fc_l1.numpy(), [l1], atol=1e-12)
    np.testing.assert_allclose(costs.total.numpy(), [raw + ks + l1], atol=1e-12)
    kong = combine_repeats(stats, emp_fc, emp_cdf, 2, dataclasses.replace(KONG2021, n_bins=3))
    z = 1 - np.corrcoef(np.arctanh(mean), np.arctanh(emp))[0, 1]
    np.testing.assert_allclose(kong.fc_cost.numpy(), [z], atol=1e-12)
    np.testing.assert_allclose(kong.total.numpy(), [z + ks], atol=1e-12)  # no L1 in Kong2021


def test_ks_of_identical_cdfs_is_zero_and_fc_of_itself_is_perfect():
    bold = random_bold(1, 10, 80)
    stats = repeat_stats(bold, SMALL)
    emp_fc = fc_matrix(bold)[0]
    costs = combine_repeats(stats, emp_fc, stats.cdf[0], 1, SMALL)
    assert costs.ks.item() == 0.0
    assert abs(costs.fc_cost.item()) < 1e-12 and costs.fc_l1.item() < 1e-12


def test_only_valid_repeats_enter_the_means():
    """Hand-made repeats: invalid rows hold garbage (NaN, huge values) that must not leak."""
    rng = np.random.default_rng(1)
    emp_fc = np.corrcoef(rng.normal(size=(6, 40)))  # E = 15
    emp_cdf = np.array([10, 40, 70, 90, 100])
    fc = torch.from_numpy(rng.uniform(-0.5, 0.8, size=(6, 15)))
    fc[1, 4] = float("nan")  # repeat 1: FC invalid
    fc[4] = 1e6  # repeat 4: flagged FC-invalid by hand
    cdf = torch.tensor(
        [[5, 30, 60, 80, 100], [0, 0, 1, 2, 3], [20, 50, 70, 95, 100]]
        + [[1, 2, 3, 4, 100], [999, 999, 999, 999, 999], [15, 45, 75, 85, 100]]
    )
    fc_valid = torch.tensor([True, False, True, True, False, True])
    fcd_valid = torch.tensor([True, False, True, False, True, True])
    stats = RepeatStats(fc, cdf, fc_valid, fcd_valid)
    variant = dataclasses.replace(KONG2021, n_bins=5, use_l1=True)
    costs = combine_repeats(stats, emp_fc, emp_cdf, 3, variant)
    assert costs.n_valid_fc.tolist() == [2, 2] and costs.n_valid_fcd.tolist() == [2, 2]
    groups = {0: ([0, 2], [0, 2]), 1: ([3, 5], [4, 5])}  # group: (FC-valid rows, FCD-valid rows)
    for g, (fc_rows, fcd_rows) in groups.items():
        expected = np_group_costs(fc[fc_rows].numpy(), cdf[fcd_rows].numpy(), emp_fc, emp_cdf, variant)
        got = [costs.fc_cost[g], costs.fc_l1[g], costs.ks[g], costs.total[g]]
        np.testing.assert_allclose([float(v) for v in got], expected, atol=1e-12)


def test_nan_repeat_dropped_and_all_invalid_group_gets_10_or_nan(emp):
    emp_fc, emp_cdf = emp
    bold = random_bold(6, 10, 80)
    clean = evaluate(bold[[0, 2]], emp_fc, emp_cdf, 2, SMALL)  # group 0 without repeat 1
    bold[1, 0, 5] = float("nan")  # group 0: one bad repeat of three
    bold[3:, 2, 40] = float("nan")  # group 1: every repeat bad
    fit = evaluate(bold, emp_fc, emp_cdf, 3, SMALL, stage="fit")
    assert fit.n_valid_fc.tolist() == [2, 0] and fit.n_valid_fcd.tolist() == [2, 0]
    assert fit.n_valid().tolist() == [2, 0]
    for name in ("fc_cost", "fc_l1", "ks", "total"):
        np.testing.assert_allclose(getattr(fit, name)[0].item(), getattr(clean, name)[0].item())
    assert fit.fc_cost[1] == 10.0 and fit.ks[1] == 10.0 and fit.fc_l1[1] == 10.0
    assert fit.total[1] == 20.0
    test = evaluate(bold, emp_fc, emp_cdf, 3, SMALL, stage="test")
    np.testing.assert_allclose(test.total[0].item(), clean.total[0].item())
    assert test.fc_cost[1].isnan() and test.ks[1].isnan() and test.total[1].isnan()
    assert test.fc_l1[1].isnan()


def test_nan_correlation_is_10_in_fit_and_nan_in_test():
    fc = torch.zeros(2, 3, dtype=torch.float64)  # constant mean FC: correlation 0 / 0
    cdf = torch.tensor([[1, 2, 3], [1, 2, 3]])
    ok = torch.ones(2, dtype=torch.bool)
    stats = RepeatStats(fc, cdf, ok, ok)
    emp_fc = np.array([[1.0, 0.3, 0.6], [0.3, 1.0, 0.7], [0.6, 0.7, 1.0]])
    variant = dataclasses.replace(KONG2021, n_bins=3)
    fit = combine_repeats(stats, emp_fc, np.array([1, 2, 3]), 2, variant, "fit")
    assert fit.fc_cost.item() == 10.0 and fit.ks.item() == 0.0 and fit.total.item() == 10.0
    test = combine_repeats(stats, emp_fc, np.array([1, 2, 3]), 2, variant, "test")
    assert test.fc_cost.isnan() and test.ks.item() == 0.0


def test_fc_edge_of_exactly_one_is_clamped_not_10():
    fc = torch.tensor([[1.0, 0.2, 0.5]], dtype=torch.float64)
    stats = RepeatStats(fc, torch.tensor([[1, 2, 3]]), torch.tensor([True]), torch.tensor([True]))
    emp_fc = np.array([[1.0, 0.3, 0.6], [0.3, 1.0, 0.7], [0.6, 0.7, 1.0]])
    costs = combine_repeats(stats, emp_fc, np.array([1, 2, 3]), 1, dataclasses.replace(KONG2021, n_bins=3))
    z = np.arctanh([1 - 1e-7, 0.2, 0.5])
    expected = 1 - np.corrcoef(z, np.arctanh([0.3, 0.6, 0.7]))[0, 1]
    np.testing.assert_allclose(costs.fc_cost.item(), expected, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# API details
# ---------------------------------------------------------------------------------------------


def test_cost_variant_registry():
    assert cost_variant("kong2021") == KONG2021
    assert cost_variant("Kong2021", window=40).window == 40
    with pytest.raises(ValueError, match="delssome"):
        cost_variant("kong2019")
    with pytest.raises(ValueError, match="n_bins"):
        cost_variant("kong2021", bins=10)
    with pytest.raises(ValueError):
        dataclasses.replace(KONG2021, hist_min=1.0)  # empty histogram range


def test_combine_rejects_bad_groups_and_stage(emp):
    emp_fc, emp_cdf = emp
    stats = repeat_stats(random_bold(4, 10, 80), SMALL)
    with pytest.raises(ValueError, match="groups of 3"):
        combine_repeats(stats, emp_fc, emp_cdf, 3, SMALL)
    with pytest.raises(ValueError, match="stage"):
        combine_repeats(stats, emp_fc, emp_cdf, 2, SMALL, stage="validation")


@pytest.mark.gpu
def test_cuda_matches_cpu(emp):
    emp_fc, emp_cdf = emp
    bold = random_bold(6, 10, 80)
    cpu = repeat_stats(bold, SMALL)
    gpu = repeat_stats(bold.cuda(), SMALL, chunk_size=4)
    assert gpu.cdf.device.type == "cuda"
    torch.testing.assert_close(gpu.fc.cpu(), cpu.fc, atol=1e-10, rtol=0)
    assert torch.equal(gpu.cdf.cpu(), cpu.cdf)
    costs = combine_repeats(gpu, emp_fc, emp_cdf, 3, SMALL)
    assert costs.total.device.type == "cpu"
    expected = combine_repeats(cpu, emp_fc, emp_cdf, 3, SMALL)
    torch.testing.assert_close(costs.total, expected.total, atol=1e-10, rtol=0)
    full = repeat_stats(torch.randn(4, 68, 1200, device="cuda"))  # float32, production shape
    assert full.fcd_valid.all() and full.fc_valid.all()


def test_chunk_size_follows_the_memory_budget():
    from pmfm.cost import CPU_CHUNK, cost_bytes_per_sim, cost_chunk_size

    per_sim = cost_bytes_per_sim(68, 1200, 83)  # production shape, float32
    assert 80e6 < per_sim < 130e6  # window copies 25 MB, window FCs 21 MB, vectors 30 MB, histogram 40 MB
    assert cost_chunk_size((1000, 68, 1200), 83, "cuda", memory_budget_gb=8.0) == 8 * 2**30 // per_sim
    assert cost_chunk_size((1000, 68, 1200), 83, "cuda", memory_budget_gb=0.01) == 1  # never zero
    assert cost_chunk_size((1000, 68, 1200), 83, "cpu") == CPU_CHUNK


def test_budget_chunking_does_not_change_results():
    bold = random_bold(7, 10, 80)
    ref = repeat_stats(bold, SMALL, chunk_size=7)
    tiny_budget = repeat_stats(bold, SMALL, chunk_size=None, memory_budget_gb=1e-9)  # CPU: 16 a chunk
    one_by_one = repeat_stats(bold, SMALL, chunk_size=1)
    for stats in (tiny_budget, one_by_one):
        assert torch.equal(stats.cdf, ref.cdf)
        torch.testing.assert_close(stats.fc, ref.fc, atol=1e-12, rtol=0)


@pytest.mark.gpu
def test_cuda_tf32_cost_close_to_float64():
    """TF32 FC/FCD products on production-shaped BOLD: KS within 0.002 of float64, FC within 1e-3."""
    gen = torch.Generator().manual_seed(0)
    slow = torch.randn(8, 4, 1200, generator=gen, dtype=torch.float64).cumsum(-1) * 0.05
    bold = torch.randn(8, 68, 1200, generator=gen, dtype=torch.float64) + slow.repeat(1, 17, 1)
    ref = repeat_stats(bold.cuda())
    fast = repeat_stats(bold.float().cuda(), precision="tf32")
    n_pairs = float(ref.cdf[0, -1])
    assert float((ref.cdf - fast.cdf).abs().max()) / n_pairs < 0.002
    assert float((ref.fc - fast.fc.double()).abs().max()) < 1e-3


@pytest.mark.gpu
def test_cuda_simulation_plus_cost_within_memory_budget():
    from pmfm.data import load_bundled
    from pmfm.evaluate import evaluate_params
    from pmfm.params import ParamSpace
    from pmfm.sim.simulator import Simulator

    data = load_bundled()
    space = ParamSpace(data.basis())
    theta = space.random_start(600, np.random.default_rng(0))  # (600, 10) feasible
    budget = 1.0  # GiB: forces several simulation and cost chunks
    simulator = Simulator(device="cuda", method="auto", memory_budget_gb=budget)
    torch.cuda.reset_peak_memory_stats()
    costs = evaluate_params(theta, space, data, simulator, repeats=1).costs
    assert torch.cuda.max_memory_allocated() < budget * 2**30
    assert int(costs.n_valid().min()) == 1
