"""The parameter space on the bundled basis: LP box, expansion, feasibility, starts, CSV input."""

import re

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from pmfm.data import bundled_path, load_bundled
from pmfm.datasets.samplers import FeasibleStream
from pmfm.params import COEFFICIENT_NAMES, Bounds, ParamError, ParamSpace, read_params_csv
from pmfm.sim import SimProtocol, Simulator, simulate

EXAMPLE_CSV = bundled_path().parent / "kong2021_example.csv"
BLOCKS = {"w": slice(0, 3), "I": slice(3, 6), "sigma": slice(7, 10)}  # coefficient columns per map
ATOL = 1e-9  # LP vertices are feasible up to the solver's tolerance


@pytest.fixture(scope="module")
def data():
    return load_bundled()


@pytest.fixture(scope="module")
def space(data):
    return ParamSpace(data.basis())


@pytest.fixture(scope="module")
def example(space):
    return read_params_csv(EXAMPLE_CSV, space)  # (5, 10)


def _regional_np(space, theta: np.ndarray) -> dict[str, np.ndarray]:
    """Regional maps computed here with numpy, independently of ParamSpace.regional."""
    maps = {name: theta[..., cols] @ space.basis.T for name, cols in BLOCKS.items()}
    return maps | {"G": theta[..., 6]}


def _inside(space, theta: np.ndarray, tol: float = 0.0) -> np.ndarray:
    maps = _regional_np(space, np.atleast_2d(theta))
    ok = np.ones(maps["G"].shape, dtype=bool)
    for name, values in maps.items():
        lo, hi = space.bounds.of(name)
        values = values[:, None] if values.ndim == 1 else values
        ok &= ((values >= lo - tol) & (values <= hi + tol)).all(axis=1)
    return ok


def _lp_vertex(space, name: str, k: int, side: int) -> np.ndarray:
    """A feasible coefficient block (3,) minimising (side 0) or maximising (side 1) coefficient k.

    Posed with the regional values r as variables, bounded directly: r = B c, lo <= r <= hi.
    """
    basis, n = space.basis, space.n_regions
    lo, hi = space.bounds.of(name)
    cost = np.zeros(3 + n)
    cost[k] = 1.0 if side == 0 else -1.0
    a_eq = np.hstack([basis, -np.eye(n)])  # B c - r = 0
    bounds = [(None, None)] * 3 + [(lo, hi)] * n
    res = linprog(cost, A_eq=a_eq, b_eq=np.zeros(n), bounds=bounds, method="highs-ipm")
    assert res.status == 0, res.message
    return res.x[:3]


# -- the LP box ----------------------------------------------------------------------------------
def test_box_matches_an_independent_lp_and_is_attained(space, example):
    assert space.box.shape == (10, 2)
    np.testing.assert_array_equal(space.box[6], [1.0, 10.0])
    centre = example[0].numpy()
    for name, cols in BLOCKS.items():
        for k in range(3):
            j = cols.start + k
            for side in (0, 1):
                block = _lp_vertex(space, name, k, side)
                tol = 1e-8 * max(1.0, abs(block[k]))
                assert abs(block[k] - space.box[j, side]) <= tol, (name, k, side)
                theta = centre.copy()
                theta[cols] = block
                theta[j] = space.box[j, side]  # the box bound itself, others at the LP optimum
                assert _inside(space, theta, tol=ATOL)[0], (name, k, side)
                beyond = theta.copy()
                beyond[j] += -1e-6 if side == 0 else 1e-6
                assert not _inside(space, beyond, tol=ATOL)[0], (name, k, side)
                assert not space.is_feasible(beyond)[0]


def test_box_contains_every_feasible_point(space):
    rng = np.random.default_rng(1)
    starts = space.random_start(100, rng).numpy()
    assert ((starts >= space.box[:, 0]) & (starts <= space.box[:, 1])).all()
    u = space.normalise(torch.as_tensor(starts))
    assert bool(((u >= 0) & (u <= 1)).all())
    # Rejection sampling per map in a box twice as wide as the LP box: accepted draws lie inside.
    for name, cols in BLOCKS.items():
        lo, hi = space.box[cols, 0], space.box[cols, 1]
        mid, width = (lo + hi) / 2, hi - lo
        draws = rng.uniform(mid - width, mid + width, size=(20000, 3))
        r = draws @ space.basis.T  # (20000, N)
        blo, bhi = space.bounds.of(name)
        ok = ((r >= blo) & (r <= bhi)).all(axis=1)
        assert ok.sum() > 20, name  # enough points to mean something
        assert ((draws[ok] >= lo) & (draws[ok] <= hi)).all(), name


# -- expansion -----------------------------------------------------------------------------------
def test_regional_is_basis_times_coefficients(space, example):
    theta = torch.cat([example, space.random_start(7, np.random.default_rng(2))])
    reg = space.regional(theta)
    expected = _regional_np(space, theta.numpy())
    for name in ("w", "I", "sigma"):
        np.testing.assert_allclose(getattr(reg, name).numpy(), expected[name], rtol=0, atol=1e-14)
        assert getattr(reg, name).shape == (12, 68)
    torch.testing.assert_close(reg.G, theta[:, 6], rtol=0, atol=0)
    assert reg.w.dtype == torch.float64
    assert space.regional(theta.float()).w.dtype == torch.float32
    back = space.coefficients(reg)
    torch.testing.assert_close(back, theta, rtol=0, atol=1e-10)


def test_example_sets_are_feasible(space, example):
    assert example.shape == (5, 10)
    np.testing.assert_allclose(example[0, 6].item(), 6.426865139537995)
    assert bool(space.is_feasible(example).all())
    assert space.violations(example) == []
    space.check(example)


def test_values_on_the_bounds_are_feasible(space):
    theta = torch.tensor(
        [[1.0, 0, 0, 0.5, 0, 0, 10.0, 0.01, 0, 0], [0.0, 0, 0, 0.0, 0, 0, 1.0, 0.0005, 0, 0]],
        dtype=torch.float64,
    )
    assert space.is_feasible(theta).tolist() == [True, True]
    torch.testing.assert_close(space.regional(theta).w[0], torch.ones(68, dtype=torch.float64))


# -- random starts -------------------------------------------------------------------------------
def test_random_start_feasible_reproducible_and_centred(space):
    starts = space.random_start(200, np.random.default_rng(3))
    assert starts.shape == (200, 10) and starts.dtype == torch.float64
    assert bool(space.is_feasible(starts).all())
    assert _inside(space, starts.numpy()).all()
    again = space.random_start(200, np.random.default_rng(3))
    torch.testing.assert_close(starts, again, rtol=0, atol=0)
    assert not torch.equal(starts[:5], space.random_start(5, np.random.default_rng(4)))
    reg = space.regional(starts)
    for name in ("w", "I", "sigma"):
        lo, hi = space.bounds.of(name)
        values = getattr(reg, name)  # (200, 68)
        assert abs(values.mean().item() - (lo + hi) / 2) < 0.05 * (hi - lo), name
        per_region = values.mean(dim=0)  # each region's mean over starts
        assert (per_region - (lo + hi) / 2).abs().max().item() < 0.1 * (hi - lo), name
    g = reg.G
    assert abs(g.mean().item() - 5.5) < 0.5
    assert 1.0 <= g.min().item() and g.max().item() <= 10.0  # every start inside G's bounds
    assert g.min().item() < 1.5 and 9.5 < g.max().item()  # and reaching both ends (misses with p ~ 1e-5)
    assert 0.4 < (g < 5.5).double().mean().item() < 0.6


def test_start_stream_draws_as_random_start_does_and_denser_than_sobol(space):
    """A bank's ``start`` samples: feasible, the same per seed and shard, distributed as the fits'
    random starts (coordinate means within 4 SE over 1,000 draws each) and about half as spread
    in every coefficient as Sobol points of the feasible set."""
    stream = FeasibleStream(space, "start", seed=0, shard=1)
    drawn = stream.take(1000)  # (1000, 10)
    assert bool(space.is_feasible(drawn).all()) and stream.acceptance > 0.9
    torch.testing.assert_close(FeasibleStream(space, "start", 0, 1).take(50), drawn[:50], rtol=0, atol=0)
    assert not torch.equal(FeasibleStream(space, "start", 0, 2).take(50), drawn[:50])
    u = space.normalise(drawn)
    ref = space.normalise(space.random_start(1000, np.random.default_rng(9)))
    se = torch.sqrt((u.var(0) + ref.var(0)) / 1000)
    assert ((u.mean(0) - ref.mean(0)).abs() < 4 * se).all()
    sobol = space.normalise(FeasibleStream(space, "sobol", 0, 1).take(1000))
    coefficients = [i for i, name in enumerate(COEFFICIENT_NAMES) if name != "G"]  # G is drawn uniformly
    ratio = u.std(0)[coefficients] / sobol.std(0)[coefficients]
    assert (ratio < 0.65).all() and (ratio > 0.2).all()


def test_normalise_round_trip(space, example):
    u = space.normalise(example)
    assert bool(((u >= 0) & (u <= 1)).all())
    torch.testing.assert_close(space.denormalise(u), example, rtol=0, atol=1e-12)
    u = torch.rand(50, 10, dtype=torch.float64)
    torch.testing.assert_close(space.normalise(space.denormalise(u)), u, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        space.denormalise(torch.zeros(1, 10, dtype=torch.float64))[0],
        torch.as_tensor(space.box[:, 0]),
    )


# -- check / violations --------------------------------------------------------------------------
def _w_out_in_one_region(space, theta: torch.Tensor) -> tuple[torch.Tensor, int]:
    """theta with w0 shifted so exactly one region has w = 1.001."""
    theta = theta.clone()
    w = space.regional(theta[None]).w[0]
    region = int(w.argmax())
    assert (w.max() - w.sort().values[-2]).item() > 1e-3  # the runner-up stays in bounds
    theta[0] += 1.001 - w[region]
    return theta, region


def test_check_names_set_parameter_region_and_range(space, example):
    bad_w, region = _w_out_in_one_region(space, example[0])
    batch = torch.stack([example[1], bad_w, example[2]])
    with pytest.raises(ParamError) as err:
        space.check(batch)
    msg = str(err.value)
    assert "1 infeasible" in msg and "set 1: w = 1.001" in msg
    assert f"1 region(s), first region {region}" in msg and "[0.0, 1.0]" in msg
    assert "set 0" not in msg and "set 2" not in msg

    g_low = example[:2].clone()
    g_low[1, 6] = 0.5
    with pytest.raises(ParamError, match=re.escape("set 1: G = 0.5, expected within [1.0, 10.0]")):
        space.check(g_low)

    big_sigma = example[:1].clone()
    big_sigma[0, 7] += 0.01  # every region's sigma goes above 0.01
    with pytest.raises(ParamError) as err:
        space.check(big_sigma)
    msg = str(err.value)
    assert "set 0: sigma" in msg and "68 region(s), first region 0" in msg
    assert "[0.0005, 0.01]" in msg

    nan = example[:3].clone()
    nan[2, 4] = float("nan")
    with pytest.raises(ParamError, match="set 2: non-finite value in I1"):
        space.check(nan)


def test_is_feasible_agrees_with_violations(space):
    rng = np.random.default_rng(5)
    lo, hi = space.box[:, 0], space.box[:, 1]
    margin = 0.05 * (hi - lo)
    theta = torch.as_tensor(rng.uniform(lo - margin, hi + margin, size=(300, 10)))
    theta = torch.cat([theta, space.random_start(20, rng)])
    theta[7, 3] = float("nan")
    theta[11, 6] = float("inf")
    feasible = space.is_feasible(theta)
    flagged = {int(m) for m in re.findall(r"^set (\d+):", "\n".join(space.violations(theta)), re.M)}
    assert {b for b in range(len(theta)) if not feasible[b]} == flagged
    assert 0 < len(flagged) < len(theta) and {7, 11} <= flagged
    assert feasible.tolist() == _inside(space, np.nan_to_num(theta.numpy(), nan=1e9)).tolist()


def test_bad_shapes_are_refused(space):
    with pytest.raises(ParamError, match=r"\(B, 10\)"):
        space.regional(torch.zeros(2, 9))
    with pytest.raises(ParamError, match="basis"):
        ParamSpace(np.ones((68, 2)))


# -- regional (non-parametric) mode --------------------------------------------------------------
def test_regional_mode(data):
    space = ParamSpace(data.basis(), mode="regional")
    assert space.dim == 205 and len(space.names) == 205
    assert space.names[:2] == ("w_0", "w_1") and space.names[67] == "w_67"
    assert space.names[68] == "I_0" and space.names[136] == "G" and space.names[137] == "sigma_0"
    assert space.names[-1] == "sigma_67"
    b = Bounds()
    np.testing.assert_array_equal(space.box[:68], [b.w] * 68)
    np.testing.assert_array_equal(space.box[68:136], [b.I] * 68)
    np.testing.assert_array_equal(space.box[136], b.G)
    np.testing.assert_array_equal(space.box[137:], [b.sigma] * 68)

    starts = space.random_start(4, np.random.default_rng(6))
    assert starts.shape == (4, 205) and bool(space.is_feasible(starts).all())
    reg = space.regional(starts)
    torch.testing.assert_close(reg.flat(), starts, rtol=0, atol=0)
    bad = starts.clone()
    bad[3, 68 + 5] = 0.6  # I_5
    expected = "set 3: I = 0.6 in 1 region(s), first region 5"
    with pytest.raises(ParamError, match=re.escape(expected)):
        space.check(bad)


# -- reading parameter files ---------------------------------------------------------------------
def test_read_params_csv_with_and_without_header(space, example, tmp_path):
    rows = example[:2].tolist()
    plain = tmp_path / "plain.csv"
    body = "\n".join(",".join(repr(x) for x in r) for r in rows)
    plain.write_text(f"# two sets\n{body}\n\n")
    torch.testing.assert_close(read_params_csv(plain, space), example[:2], rtol=0, atol=0)

    order = list(reversed(COEFFICIENT_NAMES)) + ["note"]
    named = tmp_path / "named.csv"
    lines = [",".join(order), "# a comment between rows"]
    for r in rows:
        lines.append(",".join([repr(r[COEFFICIENT_NAMES.index(n)]) for n in order[:-1]] + ["x"]))
    named.write_text("\n".join(lines) + "\n")
    torch.testing.assert_close(read_params_csv(named, space), example[:2], rtol=0, atol=0)


def test_read_params_csv_errors(space, tmp_path):
    short = tmp_path / "short.csv"
    short.write_text("# comment\n" + ",".join(["0.5"] * 10) + "\n" + ",".join(["0.5"] * 9) + "\n")
    with pytest.raises(ParamError, match=re.escape(f"{short}: line 3 has 9 values; expected 10")):
        read_params_csv(short, space)
    long = tmp_path / "long.csv"
    long.write_text(",".join(["0.5"] * 11) + "\n")
    with pytest.raises(ParamError, match=re.escape(f"{long}: line 1 has 11 values")):
        read_params_csv(long, space)
    word = tmp_path / "word.csv"
    word.write_text(",".join(["0.5"] * 9 + ["abc"]) + "\n")
    with pytest.raises(ParamError, match=re.escape(f"{word}: line 1") + ".*abc"):
        read_params_csv(word, space)
    with pytest.raises(ParamError, match="not found"):
        read_params_csv(tmp_path / "missing.csv", space)
    header = tmp_path / "header.csv"
    header.write_text("w0,w1\n1,2\n")
    with pytest.raises(ParamError, match=re.escape(f"{header}: header lacks column(s) w2")):
        read_params_csv(header, space)


def test_read_params_csv_short_row_under_header(space, tmp_path):
    path = tmp_path / "short_named.csv"
    header = "generation," + ",".join(COEFFICIENT_NAMES)
    path.write_text(header + "\n" + ",".join(["0.1"] * 10) + "\n")  # 10 values, 11 columns
    with pytest.raises(ParamError, match=re.escape(f"{path}: line 2")):
        read_params_csv(path, space)


def test_read_params_csv_names_the_file_line_and_bound_of_an_infeasible_set(space, example, tmp_path):
    rows = example[:3].clone()
    rows[1, 6] = 12.0  # G above its bound
    rows[2, 0] = float("nan")
    path = tmp_path / "sets.csv"
    body = "\n".join(",".join(repr(x) for x in r) for r in rows.tolist())
    path.write_text("# three sets, two of them bad\n" + ",".join(COEFFICIENT_NAMES) + "\n" + body + "\n")
    with pytest.raises(ParamError) as err:
        read_params_csv(path, space)
    message = str(err.value)
    assert "2 infeasible parameter set(s)" in message
    assert f"{path}: line 4: G = 12, expected within [1.0, 10.0]" in message  # comment, header, row 1
    assert f"{path}: line 5: non-finite value in w0" in message
    assert "line 3" not in message  # the good set


# -- the simulator refuses infeasible sets -------------------------------------------------------
def test_simulate_refuses_out_of_bound_sets_before_simulating(space, example, data, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the integrator ran on an infeasible set")

    monkeypatch.setattr("pmfm.sim.euler.integrate_euler", boom)
    simulator = Simulator(protocol=SimProtocol.shortened(n_tr=5))
    bad = example[:2].clone()
    bad[1, 6] = 0.5
    with pytest.raises(ParamError, match=re.escape("set 1: G = 0.5")):
        simulate(bad, space, data.sc, simulator)
    bad = example[:1].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ParamError, match="set 0: non-finite value in w0"):
        simulate(bad, space, data.sc, simulator)
