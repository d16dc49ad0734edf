"""``python -m pmfm.simulate``: the real config, shrunk to 8 regions and 100 TRs."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_REGIONS, TINY_TR, tiny_overrides
from hydra import compose, initialize_config_module

from pmfm.cost import cost_variant
from pmfm.data import load_folder
from pmfm.evaluate import evaluate_params
from pmfm.params import ParamSpace
from pmfm.pipelines.config import simulator_of
from pmfm.pipelines.simulate import COST_COLUMNS, simulate_sets


def _sets(path: Path) -> Path:
    """Two feasible sets for the tiny folder, with a header."""
    rows = [
        [0.3, 0, 0, 0.28, 0, 0, 1.5, 0.005, 0, 0],
        [0.4, 0.01, 0, 0.3, 0, 0, 2.0, 0.004, 0, 0],
    ]
    text = "w0,w1,w2,I0,I1,I2,G,s0,s1,s2\n" + "\n".join(",".join(map(str, r)) for r in rows)
    path.write_text(text + "\n")
    return path


def test_simulate_writes_costs_bold_and_figure(tiny_folder, tmp_path):
    params = _sets(tmp_path / "sets.csv")
    with initialize_config_module("pmfm.conf", version_base="1.3"):
        cfg = compose(
            "simulate", overrides=[*tiny_overrides(tiny_folder), f"params_csv={params}", "repeats=2"]
        )
    out = tmp_path / "run"
    out.mkdir()
    mean_total = simulate_sets(cfg, out)

    header = (out / "costs.csv").read_text().splitlines()[0]
    assert header.split(",") == list(COST_COLUMNS)
    table = np.loadtxt(out / "costs.csv", delimiter=",", skiprows=1)
    assert table.shape == (2, len(COST_COLUMNS))
    assert np.all(table[:, 4] == 2)  # n_valid of R = 2
    np.testing.assert_allclose(table[:, 3], table[:, 0] + table[:, 2], rtol=1e-6)  # total = fc + ks
    assert mean_total == pytest.approx(table[:, 3].mean(), rel=1e-6)
    assert np.load(out / "bold.npz")["bold"].shape == (2, 2, TINY_REGIONS, TINY_TR)
    assert np.load(out / "fcd_cdf.npy").shape == (2, 2, 10_000)
    assert (out / "fc_fcd.png").stat().st_size > 10_000

    # the same numbers as the library called directly with the same seed
    sim = simulator_of(cfg)
    data = load_folder(tiny_folder, "test", n_tr=TINY_TR)
    space = ParamSpace(data.basis())
    theta = torch.tensor(np.loadtxt(params, delimiter=",", skiprows=1))
    direct = evaluate_params(
        theta, space, data, sim, repeats=2, seed=cfg.seed, variant=cost_variant("kong2021")
    )
    np.testing.assert_allclose(table[:, 3], direct.costs.total.numpy(), rtol=1e-6)


def test_cli_bad_data_exits_nonzero_with_clear_message(tmp_path):
    missing = tmp_path / "nowhere"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pmfm.simulate",
            "data=folder",
            f"data.path={missing}",
            f"hydra.run.dir={tmp_path}/run",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        str(missing) in proc.stderr and "not found" in proc.stderr.lower() or "missing" in proc.stderr.lower()
    )


def test_cli_bad_params_exits_nonzero(tiny_folder, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("0.5,0,0,0.3,0,0,50.0,0.005,0,0\n")  # G = 50, outside [1, 10]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pmfm.simulate",
            *tiny_overrides(tiny_folder),
            f"params_csv={bad}",
            f"hydra.run.dir={tmp_path}/run",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "G = 50" in proc.stderr and "[1.0, 10.0]" in proc.stderr


def test_regional_space_gives_the_same_costs_as_its_coefficients(tiny_folder, tmp_path):
    params = _sets(tmp_path / "sets.csv")
    data = load_folder(tiny_folder, "test", n_tr=TINY_TR)
    coefficients = np.loadtxt(params, delimiter=",", skiprows=1)
    regional = ParamSpace(data.basis()).regional(torch.tensor(coefficients)).flat().numpy()  # (2, 25)
    np.savetxt(tmp_path / "regional.csv", regional, delimiter=",")
    totals = []
    for overrides in (
        [f"params_csv={params}"],
        [f"params_csv={tmp_path / 'regional.csv'}", "param_space=regional"],
    ):
        with initialize_config_module("pmfm.conf", version_base="1.3"):
            cfg = compose("simulate", overrides=[*tiny_overrides(tiny_folder), *overrides, "plot=false"])
        out = tmp_path / f"run{len(totals)}"
        out.mkdir()
        simulate_sets(cfg, out)
        totals.append(np.loadtxt(out / "costs.csv", delimiter=",", skiprows=1)[:, 3])
    np.testing.assert_allclose(totals[0], totals[1], rtol=1e-5)
