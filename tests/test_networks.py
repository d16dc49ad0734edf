"""Surrogate networks: built from primitives, right shapes, deterministic, differentiable, trainable."""

import pytest
import torch

from pmfm.data import load_bundled
from pmfm.models.networks import NETWORKS, build_network, expand, normalised_regional
from pmfm.params import ParamSpace

# small hyperparameters per registered network, so that every test runs in well under a second
SMALL = {
    "mlp": {"hidden": 32, "depth": 2},
    "mlp_regional": {"hidden": 32, "depth": 2},
    "mlp_lna": {"hidden": 32, "depth": 2, "with_coefficients": True},
    "transformer": {"layers": 1, "heads": 2, "width": 16, "ff_mult": 2},
    "gnn": {"layers": 2, "width": 16},
    "ensemble": {"member": "mlp", "k": 3, "hidden": 16, "depth": 1},
}
N_OUT = 2


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest on one thread (and do not fight a busy machine's other jobs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def geometry():
    """The primitive (list) box, basis and SC of the bundled data, and the parameter space."""
    data = load_bundled()
    space = ParamSpace(data.basis())
    return space, {"box": space.box.tolist(), "basis": data.basis().tolist(), "sc": data.sc.tolist()}


def build(name, geometry, **extra):
    return build_network(name, n_outputs=N_OUT, **geometry[1], **{**SMALL[name], **extra})


def test_registry_covers_every_network():
    assert set(NETWORKS) == set(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_shape_determinism_and_gradients(name, geometry):
    net = build(name, geometry).eval()
    assert net.is_ensemble == (name == "ensemble")
    assert not any(n in dict(net.named_parameters()) for n in ("box", "basis", "sc"))  # buffers
    u = torch.rand(7, 10, requires_grad=True)
    y = net(u)
    assert y.shape == ((3, 7, N_OUT) if name == "ensemble" else (7, N_OUT))
    assert torch.isfinite(y).all()
    assert torch.equal(y, net(u))
    (grad,) = torch.autograd.grad(y.sum(), u)
    assert grad.shape == u.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(SMALL))
def test_fits_a_tiny_regression(name, geometry):
    u = torch.rand(128, 10)
    y = torch.stack([(u**2).sum(1), u[:, 0] - u[:, 6]], dim=1)  # (128, 2)
    y = (y - y.mean(0)) / y.std(0)  # standardised: a constant cannot lower the loss
    net = build(name, geometry)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

    def loss():
        pred = net(u)
        return ((pred - y) ** 2).mean()  # broadcasts over ensemble members

    first = loss().item()
    for _ in range(40):
        opt.zero_grad()
        step = loss()
        step.backward()
        opt.step()
    assert loss().item() < 0.5 * first


def test_expand_matches_param_space(geometry):
    space, prim = geometry
    u = torch.rand(5, 10, dtype=torch.float64)
    box = torch.tensor(prim["box"], dtype=torch.float64)
    basis = torch.tensor(prim["basis"], dtype=torch.float64)
    got = expand(u, box, basis)
    want = space.regional(space.denormalise(u))
    for g, w in zip(got, want.astuple(), strict=True):
        torch.testing.assert_close(g, w)


def test_normalised_regional_maps_feasible_sets_into_unit_interval(geometry):
    space, prim = geometry
    theta = space.random_start(4, __import__("numpy").random.default_rng(0))  # (4, 10) feasible
    u = space.normalise(theta)
    box = torch.tensor(prim["box"], dtype=torch.float64)
    basis = torch.tensor(prim["basis"], dtype=torch.float64)
    for values in normalised_regional(u, box, basis):
        assert values.min() >= -1e-9 and values.max() <= 1 + 1e-9


def test_regional_space_box_is_accepted(geometry):
    space, prim = geometry
    regional = ParamSpace(space.basis, mode="regional")  # P = 3N + 1
    net = build_network("gnn", n_outputs=1, box=regional.box.tolist(), basis=prim["basis"], sc=prim["sc"])
    assert net(torch.rand(3, regional.dim)).shape == (3, 1)


def test_float64_input_is_accepted(geometry):
    net = build("mlp", geometry)
    assert net(torch.rand(3, 10, dtype=torch.float64)).dtype == torch.float32


def test_transformer_conditioning(geometry):
    net = build("transformer", geometry, cond_dim=5).eval()
    u, cond = torch.rand(4, 10), torch.rand(4, 5)
    y = net(u, cond)
    assert y.shape == (4, N_OUT)
    assert not torch.allclose(y, net(u, torch.zeros(4, 5)))  # the condition reaches the output
    with pytest.raises(ValueError, match="cond"):
        net(u)
    with pytest.raises(ValueError, match="cond_dim=0"):
        build("transformer", geometry)(u, cond)


def test_transformer_ensemble_passes_cond(geometry):
    prim = geometry[1]
    hp = {"layers": 1, "heads": 2, "width": 8, "cond_dim": 3}
    net = build_network("ensemble", n_outputs=N_OUT, member="transformer", k=2, **prim, **hp)
    assert net(torch.rand(4, 10), torch.rand(4, 3)).shape == (2, 4, N_OUT)


def test_ensemble_members_differ(geometry):
    net = build("ensemble", geometry).eval()
    y = net(torch.rand(6, 10))  # (3, 6, N_OUT)
    assert not torch.allclose(y[0], y[1]) and not torch.allclose(y[1], y[2])


def test_unknown_names_are_rejected(geometry):
    with pytest.raises(ValueError, match="unknown network"):
        build_network("resnet", n_outputs=1, **geometry[1])
    with pytest.raises(ValueError, match="unknown ensemble member"):
        build_network("ensemble", n_outputs=1, member="ensemble", **geometry[1])
    with pytest.raises(ValueError, match="unknown activation"):
        build_network("mlp", n_outputs=1, activation="swish2", **geometry[1])
    with pytest.raises(ValueError, match="sc_transform"):
        build_network("gnn", n_outputs=1, sc_transform="sqrt", **geometry[1])


def test_rebuilds_from_its_hyperparameters_and_state(geometry):
    """What a Lightning checkpoint does: the same primitives and the state dict give the same map."""
    net = build("transformer", geometry).eval()
    twin = build("transformer", geometry).eval()
    twin.load_state_dict(net.state_dict())
    u = torch.rand(3, 10)
    torch.testing.assert_close(twin(u), net(u))


@pytest.mark.parametrize("name", ["transformer", "gnn"])
def test_cpu_chunks_give_the_same_numbers(name, geometry):
    net = build(name, geometry, chunk=0).eval()
    u = torch.rand(10, 10)
    whole = net(u)
    net.chunk = 3  # 4 chunks, the last one short
    torch.testing.assert_close(net(u), whole)


def test_transformer_with_a_stored_condition_uses_it_unless_given_another(geometry):
    from pmfm.models.conditioning import empirical_condition

    data = load_bundled()
    vector = empirical_condition(data.fc, data.fcd_cdf)  # (68*67/2 + 32,)
    assert vector.shape == (68 * 67 // 2 + 32,)
    assert (
        vector[0] == pytest.approx(float(data.fc[0, 1])) and vector[-1] == 1.0
    )  # FC edge (0, 1); CDF ends at 1
    assert bool((vector[-32:].diff() >= 0).all())  # a CDF
    net = build("transformer", geometry, condition=vector.tolist()).eval()
    u = torch.rand(4, 10)
    torch.testing.assert_close(net(u), net(u, vector))  # the stored condition is the default
    torch.testing.assert_close(net(u), net(u, vector.expand(4, -1)))
    other = vector.clone()
    other[:-32] = 0.2  # another group's FC
    assert not torch.allclose(net(u), net(u, other))
    with pytest.raises(ValueError, match=r"cond must be \(2310,\)"):
        net(u, vector[:10])
    with pytest.raises(ValueError, match="cond_dim=3"):
        build("transformer", geometry, condition=vector.tolist(), cond_dim=3)
    with pytest.raises(ValueError, match="fcd_cdf"):
        empirical_condition(data.fc, torch.zeros(100))
