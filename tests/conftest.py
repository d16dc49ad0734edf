"""Shared fixtures: a fixed seed for every test, GPU tests skipped without CUDA."""

import os
import random
import shutil

# Without a GPU, Triton kernels run in Triton's interpreter (tests/test_fused.py). The variable must be
# set before anything imports triton (torch may), or the interpreter cannot call nested kernel functions.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np
import pytest
import torch

import pmfm.pipelines.config  # noqa: F401  (registers the config schemas Hydra checks the configs against)

# One torch thread per test process: the suite runs on 2 cores with pytest-xdist (-n 2), and two
# OpenMP threads fighting a second process make tiny ops orders of magnitude slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 (legacy global state some libraries still read)
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


TINY_REGIONS = 8
TINY_TR = 100  # TRs kept by the shrunk protocol of the tests


@pytest.fixture
def tiny_folder(tmp_path):
    """A CBIG-format folder (split "test") with 8 regions in a chain whose FCD total fits 100 TRs."""
    return make_tiny_folder(tmp_path)


@pytest.fixture
def tiny_splits(tiny_folder):
    """The tiny folder with its test split copied to train and vali (data for fits and banks)."""
    from scipy.io import loadmat, savemat

    cdf = loadmat(tiny_folder / "fcd_test.mat")["test_aveM"]
    for split in ("train", "vali"):
        shutil.copy(tiny_folder / "sc_test.csv", tiny_folder / f"sc_{split}.csv")
        shutil.copy(tiny_folder / "fc_test.csv", tiny_folder / f"fc_{split}.csv")
        savemat(tiny_folder / f"fcd_{split}.mat", {f"{split}_aveM": cdf})
    return tiny_folder


def make_tiny_folder(tmp_path):
    """The body of the ``tiny_folder`` fixture, for module-scoped fixtures."""
    from pmfm.cost import KONG2021, fc_matrix, fcd_cdf

    rng = np.random.default_rng(0)
    n = TINY_REGIONS
    sc = rng.uniform(0, 100, (n, n))
    sc = (sc + sc.T) / 2
    sc *= np.abs(np.subtract.outer(np.arange(n), np.arange(n))) == 1  # a chain of neighbours: stable at
    # every G in bounds (all-to-all weights make the Euler steps of dt 0.01 diverge above G ~ 6)
    bold = torch.tensor(rng.standard_normal((1, n, TINY_TR)))
    bold = bold + 0.5 * bold.mean(1, keepdim=True)  # some shared signal: positive FC
    folder = tmp_path / "tiny"
    folder.mkdir()
    np.savetxt(folder / "sc_test.csv", sc, delimiter=",")
    np.savetxt(folder / "fc_test.csv", fc_matrix(bold)[0].numpy(), delimiter=",")
    from scipy.io import savemat

    savemat(folder / "fcd_test.mat", {"test_aveM": fcd_cdf(bold, KONG2021)[0].numpy()[:, None]})
    np.savetxt(folder / "myelin.csv", rng.uniform(1.0, 1.7, n))
    np.savetxt(folder / "rsfc_gradient.csv", rng.uniform(-5, 7, n))
    return folder


# a bank on the tiny data: 2 Sobol shards of 6, 4 random starts, CMA-ES against 2 synthetic subjects
# (6 x 2 generations)
SMALL_BANK = [
    "dataset=bank", "dataset.repeats=2", "dataset.sobol.shard_size=6", "dataset.sobol.chunk_size=3",
    "dataset.starts.num_shards=1", "dataset.starts.shard_size=4", "dataset.starts.chunk_size=2",
    "dataset.cmaes.synthetic=2", "dataset.cmaes.synthetic_near_dataset=0",
    "dataset.cmaes.synthetic_min_reliability=0", "dataset.cmaes.popsize=6", "dataset.cmaes.mu=2",
    "dataset.cmaes.max_generations=2", "progress=false",
]  # fmt: skip

# an amortised fit shrunk to the small bank: a tiny emulator, short refinement and polish
AMORTISED = [
    "strategy=amortised", "strategy.train_epochs=20", "strategy.top_k=3", "strategy.n_starts=2",
    "strategy.refine.popsize=8", "strategy.refine.mu=2", "strategy.refine.max_generations=3",
    "strategy.repeats=2", "strategy.simulate_top=2", "strategy.cmaes.popsize=6", "strategy.cmaes.mu=2",
    "strategy.cmaes.max_generations=2", "model.hidden=16", "model.depth=1", "model.rank=4",
]  # fmt: skip


def tiny_overrides(folder) -> list[str]:
    """Hydra overrides that shrink a run to the tiny folder: 100 TRs, short warm-up (protocol=tiny)."""
    return ["data=folder", f"data.path={folder}", "data.split=test", "protocol=tiny", "device=cpu"]


def compose_config(name: str, overrides=()):
    """The composed config of command ``name`` (simulate, generate, train, fit, ...) as Hydra builds it."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("pmfm.conf", version_base="1.3"):
        return compose(name, overrides=list(overrides))


def write_synthetic_dataset(folder, space, n_runs: int = 12, per_run: int = 40, seed: int = 0):
    """A CMA-ES-shaped dataset whose costs are a smooth known function of the normalised inputs."""
    from pmfm.datasets.store import COLUMNS, ShardStore

    rng = np.random.default_rng(seed)
    store = ShardStore(folder)
    store.claim({"dim": space.dim, "dataset": {"num_shards": 2, "name": "synthetic"}}, "synthetic", {})
    for shard in range(2):
        parts = []
        for run in range(shard, n_runs, 2):
            theta = space.random_start(per_run, rng)  # (n, 10) feasible
            u = space.normalise(theta).numpy()
            fc = 0.3 + 0.5 * ((u - 0.5) ** 2).sum(1) + 0.01 * rng.standard_normal(per_run)
            ks = 0.2 + 0.3 * u[:, 6] + 0.01 * rng.standard_normal(per_run)
            valid = u[:, 0] < 0.9
            n = per_run
            rows = {
                "theta": theta.numpy(),
                "sample_id": run * per_run + np.arange(n),
                "shard": np.full(n, shard),
                "start": np.full(n, run),
                "generation": np.arange(n) // 10,
                "repeats": np.full(n, 3),
                "n_valid_fc": np.where(valid, 3, 0),
                "n_valid_fcd": np.where(valid, 3, 0),
                "fc_cost": np.where(valid, fc, 10.0),
                "fc_l1": np.abs(0.1 * u[:, 1]),
                "ks": np.where(valid, ks, 10.0),
                "total": np.where(valid, fc + ks, 20.0),
            }
            parts.append({k: np.asarray(rows[k]).astype(t) for k, t in COLUMNS.items()})
        merged = {k: np.concatenate([p[k] for p in parts]) for k in COLUMNS}
        store.write_shard(shard, merged, {"strategy": "synthetic"})
    store.update_manifest(2)
    return folder


def assert_diverse_and_feasible(space, theta, most: int) -> None:
    """At most ``most`` distinct feasible sets, none alike under the 0.98 rule (docs/fitting.md)."""
    from pmfm.evaluate import DIVERSITY_THRESHOLD, map_correlations

    theta = torch.as_tensor(theta, dtype=torch.float64)
    assert 0 < len(theta) <= most, f"{len(theta)} sets, expected 1..{most}"
    assert bool(space.is_feasible(theta).all()), "an infeasible set was returned"
    for i in range(len(theta)):
        for j in range(i):
            r = map_correlations(space, theta[i], theta[j])
            assert not (r > DIVERSITY_THRESHOLD).all(), f"sets {j} and {i} alike: map correlations {r}"
