"""The package as users install it: a wheel in a fresh virtual environment, run from another folder.

The wheel carries its configs, bundled data and shipped dataset; nothing is read from the source
tree. Dependencies come from the test's own environment (a path entry in the new venv), so the test
needs no network. Marked slow: ``make test-wheel`` (and CI) runs it as a step of its own.
"""

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat, savemat

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv holding the pmfm wheel alone, the other packages reached through a path entry."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", work, ROOT],
        check=True,
        capture_output=True,
    )
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # the dependencies of this environment (a plain path: its editable-install hooks do not run)
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(work.glob("pmfm-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, wheel],
        check=True,
        capture_output=True,
    )
    return python


def _run(python: Path, cwd: Path, *args) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(cwd), "WANDB_MODE": "offline"}
    return subprocess.run([python, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_wheel_brings_its_configs_and_runs_simulate_and_fit(installed, tiny_folder, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(installed, elsewhere, "-c", "import pmfm, pmfm.conf; print(pmfm.__file__)")
    assert where.returncode == 0, where.stderr
    assert str(ROOT) not in where.stdout and "site-packages" in where.stdout  # the installed copy

    tiny = ["data=folder", f"data.path={tiny_folder}", "data.split=test", "protocol=tiny", "device=cpu"]
    sets = tmp_path / "sets.csv"
    sets.write_text("0.3,0,0,0.28,0,0,1.5,0.005,0,0\n")
    simulate = _run(
        installed, elsewhere, "-m", "pmfm.simulate", *tiny, f"params_csv={sets}", "repeats=2", "plot=false",
        f"hydra.run.dir={tmp_path / 'simulate'}",
    )  # fmt: skip
    assert simulate.returncode == 0, simulate.stderr[-3000:]
    costs = np.loadtxt(tmp_path / "simulate" / "costs.csv", delimiter=",", skiprows=1, ndmin=2)
    assert costs.shape == (1, 5) and costs[0, 4] == 2  # one set, both repeats valid
    assert (tmp_path / "simulate" / "bold.npz").is_file()

    for split in ("train", "vali"):  # the tiny folder as training and validation data
        for kind in ("sc", "fc"):
            (tiny_folder / f"{kind}_{split}.csv").write_text((tiny_folder / f"{kind}_test.csv").read_text())
        cdf = loadmat(tiny_folder / "fcd_test.mat")["test_aveM"]
        savemat(tiny_folder / f"fcd_{split}.mat", {f"{split}_aveM": cdf})
    fit = _run(
        installed, elsewhere, "-m", "pmfm.fit", *tiny[:2], "data.split=train", *tiny[3:],
        "strategy=simulator", "strategy.n_starts=1", "strategy.repeats=1", "strategy.cmaes.popsize=6",
        "strategy.cmaes.mu=2", "strategy.cmaes.max_generations=2", "validation.repeats=2",
        "validation.top_k=2", "plot=false", f"hydra.run.dir={tmp_path / 'fit'}",
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    results = np.loadtxt(tmp_path / "fit" / "results.csv", delimiter=",", ndmin=2)
    assert results.shape[0] == 11 + 3 * 8 + 1 + 10 and 1 <= results.shape[1] <= 2  # released layout
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert summary["search"]["simulations"] == 1 * 6 * 1 * 2  # start x population x R x generations
    assert summary["validation"]["simulations"] == 2 * 2  # each generation's best, R = 2
