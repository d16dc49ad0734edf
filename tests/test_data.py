"""pmfm.data: the bundled HCP data, folders in the same format, and every validation error."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from pmfm.data import (
    DataError,
    EmpiricalData,
    available_splits,
    bundled_path,
    fcd_pair_count,
    load,
    load_bundled,
    load_folder,
)

SPLIT = "test"  # a split that is not bundled, as the held-out test data will arrive


# ---------------------------------------------------------------- helpers


def write_csv(path: Path, x: np.ndarray) -> None:
    np.savetxt(path, np.atleast_1d(x), delimiter=",", fmt="%.17g")


def write_fcd(folder: Path, split: str, cdf: np.ndarray, variable: str | None = None) -> None:
    scipy.io.savemat(folder / f"fcd_{split}.mat", {variable or f"{split}_aveM": cdf})


def write_split(folder: Path, split: str, sc: np.ndarray, fc: np.ndarray, cdf: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / f"sc_{split}.csv", sc)
    write_csv(folder / f"fc_{split}.csv", fc)
    write_fcd(folder, split, cdf)


@pytest.fixture(scope="module")
def train() -> EmpiricalData:
    return load_bundled("train")


@pytest.fixture
def test_folder(tmp_path: Path, train: EmpiricalData) -> Path:
    """A folder holding only sc_test/fc_test/fcd_test: copies of the bundled training data."""
    folder = tmp_path / "hcp_test"
    write_split(folder, SPLIT, train.sc, train.fc, train.fcd_cdf.astype(np.int32).reshape(-1, 1))
    return folder


def synthetic_timeseries(n: int, n_tr: int, seed: int = 0) -> np.ndarray:
    """Random regional signals with a shared component, shape (n, n_tr)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n_tr)) + 0.5 * rng.standard_normal((1, n_tr))


def synthetic_fcd_cdf(ts: np.ndarray, window: int, n_bins: int) -> np.ndarray:
    """FCD CDF in counts of time series `ts` (n, n_tr), as docs/cost.md#fcd computes it."""
    n, n_tr = ts.shape
    iu = np.triu_indices(n, 1)
    windows = [np.corrcoef(ts[:, t : t + window])[iu] for t in range(n_tr - window + 1)]
    fcd = np.corrcoef(np.array(windows))  # (W, W)
    values = fcd[np.triu_indices(len(windows), 1)]
    hist, _ = np.histogram(values, bins=n_bins, range=(-0.9999, 1.0))
    return np.cumsum(hist)  # (n_bins,)


SMALL = {"n_tr": 100, "window": 10, "n_bins": 50}  # 91 windows, 4095 pairs


def write_synthetic(folder: Path, n: int = 8, covariates: bool = True) -> np.ndarray:
    """An n-region split "train" with FCD for SMALL; returns its time series (n, n_tr)."""
    rng = np.random.default_rng(1)
    ts = synthetic_timeseries(n, SMALL["n_tr"])
    sc = rng.uniform(0, 100, (n, n))
    sc = np.triu(sc, 1) + np.triu(sc, 1).T  # (n, n) symmetric, zero diagonal
    cdf = synthetic_fcd_cdf(ts, SMALL["window"], SMALL["n_bins"])
    write_split(folder, "train", sc, np.corrcoef(ts), cdf.reshape(1, -1))  # row orientation
    if covariates:
        write_csv(folder / "myelin.csv", np.linspace(1.0, 1.7, n))
        write_csv(folder / "rsfc_gradient.csv", np.linspace(-5.0, 7.5, n))
    return ts


# ---------------------------------------------------------------- the bundled data


def test_fcd_pair_count():
    assert fcd_pair_count(1200, 83) == 624_403
    assert fcd_pair_count(100, 10) == 91 * 90 // 2
    assert fcd_pair_count(5, 5) == 0
    with pytest.raises(ValueError, match="window"):
        fcd_pair_count(10, 11)


@pytest.mark.parametrize("split", ["train", "vali"])
def test_bundled_splits_have_spec_facts(split):
    d = load_bundled(split)
    assert (d.name, d.split, d.n_regions, d.n_bins) == ("hcp_desikan68", split, 68, 10_000)
    assert d.source == bundled_path()
    assert d.sc.shape == d.fc.shape == (68, 68)
    assert d.sc.dtype == d.fc.dtype == np.float64
    assert d.sc.max() > 1000  # raw streamline weights, not normalised
    np.testing.assert_array_equal(np.diag(d.sc), 0.0)
    np.testing.assert_array_equal(np.diag(d.fc), 1.0)
    assert d.fcd_cdf.dtype == np.int64 and d.fcd_cdf.shape == (10_000,)
    assert d.fcd_cdf[-1] == d.fcd_total == 624_403
    assert np.all(np.diff(d.fcd_cdf) >= 0)
    assert d.myelin.min() == pytest.approx(1.01, abs=0.01)
    assert d.myelin.max() == pytest.approx(1.67, abs=0.01)
    assert d.gradient.min() == pytest.approx(-4.9, abs=0.1)
    assert d.gradient.max() == pytest.approx(7.5, abs=0.1)
    names = d.region_names
    assert len(names) == 68 and len(set(names)) == 68
    assert all(n.startswith("ctx-lh-") for n in names[:34])
    assert all(n.startswith("ctx-rh-") for n in names[34:])
    assert names[0] == "ctx-lh-bankssts" and names[34] == "ctx-rh-bankssts"


def test_train_and_vali_differ_but_share_covariates(train):
    vali = load_bundled("vali")
    assert not np.array_equal(train.sc, vali.sc)
    assert not np.array_equal(train.fc, vali.fc)
    np.testing.assert_array_equal(train.myelin, vali.myelin)
    assert train.region_names == vali.region_names


def test_basis_is_one_myelin_gradient(train):
    b = train.basis()
    assert b.shape == (68, 3) and b.dtype == np.float64
    np.testing.assert_array_equal(b[:, 0], 1.0)
    np.testing.assert_array_equal(b[:, 1], train.myelin)
    np.testing.assert_array_equal(b[:, 2], train.gradient)


def test_arrays_are_read_only(train):
    with pytest.raises(ValueError, match="read-only"):
        train.sc[0, 0] = 1.0


def test_imports_without_hydra_or_lightning():
    code = (
        "import sys, pmfm.data; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'hydra', 'lightning', 'torch'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_load_defaults_to_bundled(train):
    d = load(split="train")
    np.testing.assert_array_equal(d.fc, train.fc)
    assert d.name == "hcp_desikan68"


def test_bundled_folder_ships_licence_and_provenance():
    folder = bundled_path()
    assert (folder / "LICENSE-CBIG.txt").read_text().startswith("MIT License")
    assert "S1200" in (folder / "PROVENANCE.md").read_text()
    assert available_splits(folder) == ["train", "vali"]


# ---------------------------------------------------------------- other folders


def test_test_split_folder_reuses_bundled_covariates(test_folder, train):
    d = load_folder(test_folder, SPLIT)
    assert (d.name, d.split, d.source) == ("hcp_test", SPLIT, test_folder.resolve())
    np.testing.assert_allclose(d.sc, train.sc, rtol=0, atol=0)
    np.testing.assert_allclose(d.fc, train.fc, rtol=0, atol=0)
    np.testing.assert_array_equal(d.fcd_cdf, train.fcd_cdf)
    np.testing.assert_array_equal(d.myelin, train.myelin)
    np.testing.assert_array_equal(d.gradient, train.gradient)
    assert d.region_names == train.region_names
    assert load(test_folder, SPLIT).split == SPLIT


def test_fcd_stored_as_float_row_loads_as_int(test_folder, train):
    write_fcd(test_folder, SPLIT, train.fcd_cdf.astype(np.float64).reshape(1, -1))
    d = load_folder(test_folder, SPLIT)
    assert d.fcd_cdf.dtype == np.int64
    np.testing.assert_array_equal(d.fcd_cdf, train.fcd_cdf)


def test_fc_rounding_beyond_one_is_clipped(test_folder, train):
    fc = train.fc.copy()
    fc[0, 1] = fc[1, 0] = 1.0 + 5e-7
    write_csv(test_folder / f"fc_{SPLIT}.csv", fc)
    d = load_folder(test_folder, SPLIT)
    assert d.fc.max() == 1.0


def test_synthetic_8_region_folder(tmp_path):
    folder = tmp_path / "toy"
    ts = write_synthetic(folder)
    d = load_folder(folder, "train", **SMALL)
    assert (d.n_regions, d.n_bins, d.fcd_total) == (8, 50, fcd_pair_count(100, 10))
    assert d.fcd_total == 4095
    np.testing.assert_allclose(d.fc, np.corrcoef(ts), atol=1e-12)
    np.testing.assert_allclose(d.myelin, np.linspace(1.0, 1.7, 8))
    assert d.region_names == tuple(f"region_{i:03d}" for i in range(8))
    assert d.basis().shape == (8, 3)


def test_synthetic_folder_reads_its_own_names(tmp_path):
    folder = tmp_path / "toy"
    write_synthetic(folder)
    names = np.array([f"roi{i}" for i in range(8)], dtype=object).reshape(-1, 1)
    scipy.io.savemat(folder / "Desikan_68_region_description.mat", {"region_descritption": names})
    assert load_folder(folder, **SMALL).region_names == tuple(f"roi{i}" for i in range(8))


# ---------------------------------------------------------------- every bad input


def _set(name: str, value: Callable[[EmpiricalData], np.ndarray]):
    """Mutation that rewrites csv `name` (with {s} for the split) from the training data."""

    def mutate(folder: Path, d: EmpiricalData) -> None:
        write_csv(folder / name.format(s=SPLIT), value(d))

    return mutate


def _edit(x: np.ndarray, index, value) -> np.ndarray:
    x = x.copy()
    x[index] = value
    return x


def _text(name: str, text: str):
    def mutate(folder: Path, d: EmpiricalData) -> None:
        (folder / name.format(s=SPLIT)).write_text(text)

    return mutate


def _remove(name: str):
    def mutate(folder: Path, d: EmpiricalData) -> None:
        (folder / name.format(s=SPLIT)).unlink()

    return mutate


def _fcd(value: Callable[[np.ndarray], np.ndarray], variable: str | None = None):
    def mutate(folder: Path, d: EmpiricalData) -> None:
        write_fcd(folder, SPLIT, value(d.fcd_cdf.astype(np.float64).reshape(-1, 1)), variable)

    return mutate


def _synthetic(**kw):
    def mutate(folder: Path, d: EmpiricalData) -> None:
        for p in folder.iterdir():
            p.unlink()
        write_synthetic(folder, **kw)

    return mutate


def _nothing(folder: Path, d: EmpiricalData) -> None:
    pass


def _sym(value: float):
    return lambda d: _edit(_edit(d.sc, (2, 3), value), (3, 2), value)


SC, FC, FCD = f"sc_{SPLIT}.csv", f"fc_{SPLIT}.csv", f"fcd_{SPLIT}.mat"
M, G, NAMES = "myelin.csv", "rsfc_gradient.csv", "Desikan_68_region_description.mat"

# (id, mutation, file named in the message, problem (regex), load kwargs)
BAD = [
    ("folder-missing", None, "no_such_folder", "data folder not found", {}),
    ("split-invalid", _nothing, "hcp_test", r"invalid split name 'a/b'", {"split": "a/b"}),
    (
        "split-typo",
        _nothing,
        "sc_validation.csv",
        r"missing file for split 'validation' \(complete splits in this folder: test\)",
        {"split": "validation"},
    ),
    ("sc-missing", _remove(SC), SC, r"missing file .*expected sc_test.csv, fc_test.csv", {}),
    ("fc-missing", _remove(FC), FC, "missing file", {}),
    ("fcd-missing", _remove(FCD), FCD, "missing file", {}),
    ("sc-text", _text(SC, "a,b\n1,2\n"), SC, "cannot parse as comma-separated numbers", {}),
    ("fc-empty", _text(FC, ""), FC, "file is empty", {}),
    ("fcd-not-mat", _text(FCD, "not a mat file"), FCD, "cannot read", {}),
    (
        "fcd-wrong-variable",
        _fcd(lambda c: c, "train_aveM"),
        FCD,
        r"variable 'test_aveM' not found \(variables found: train_aveM\)",
        {},
    ),
    ("sc-not-square", _set(SC, lambda d: d.sc[:, :67]), SC, r"SC has shape \(68, 67\)", {}),
    ("fc-not-square", _set(FC, lambda d: d.fc[:, :67]), FC, r"FC has shape \(68, 67\)", {}),
    (
        "sc-fc-count-differ",
        _set(FC, lambda d: d.fc[:67, :67]),
        FC,
        "FC has 67 regions but sc_test.csv has 68",
        {},
    ),
    (
        "sc-asymmetric",
        _set(SC, lambda d: _edit(d.sc, (2, 3), d.sc[2, 3] + 1.0)),
        SC,
        "SC is not symmetric, first at row 2, col 3",
        {},
    ),
    ("sc-negative", _set(SC, _sym(-1.0)), SC, "SC has 2 negative value.*row 2, col 3", {}),
    ("sc-nan", _set(SC, _sym(np.nan)), SC, "SC has 2 NaN/Inf value.*row 2, col 3", {}),
    ("sc-inf", _set(SC, _sym(np.inf)), SC, "SC has 2 NaN/Inf value", {}),
    ("sc-all-zero", _set(SC, lambda d: np.zeros((68, 68))), SC, "SC is all zeros", {}),
    (
        "fc-diagonal",
        _set(FC, lambda d: _edit(d.fc, (5, 5), 0.9)),
        FC,
        r"FC diagonal is not 1: FC\[5, 5\] = 0.9",
        {},
    ),
    (
        "fc-out-of-range",
        _set(FC, lambda d: _edit(d.fc, (0, 1), 1.5)),
        FC,
        r"FC has 1 value\(s\) outside \[-1, 1\], first at row 0, col 1",
        {},
    ),
    (
        "fc-nan",
        _set(FC, lambda d: _edit(d.fc, (4, 7), np.nan)),
        FC,
        "FC has 1 NaN/Inf value.*row 4, col 7",
        {},
    ),
    (
        "fc-asymmetric",
        _set(FC, lambda d: _edit(d.fc, (1, 0), d.fc[1, 0] + 0.01)),
        FC,
        "FC is not symmetric, first at row 0, col 1",
        {},
    ),
    (
        "fcd-wrong-bins",
        _fcd(lambda c: c[:9999]),
        FCD,
        "FCD CDF has 9999 bins; expected n_bins = 10000",
        {},
    ),
    (
        "fcd-n_bins-kwarg",
        _nothing,
        FCD,
        "FCD CDF has 10000 bins; expected n_bins = 5000",
        {"n_bins": 5000},
    ),
    ("fcd-matrix", _fcd(lambda c: c.reshape(100, 100)), FCD, r"FCD CDF has shape \(100, 100\)", {}),
    (
        "fcd-decreasing",
        _fcd(lambda c: _edit(c, (9000, 0), c[8999, 0] - 1)),
        FCD,
        "FCD CDF decreases at bin 9000",
        {},
    ),
    (
        "fcd-total",
        _fcd(lambda c: _edit(c, (9999, 0), 624_404)),
        FCD,
        r"FCD CDF ends at 624404; expected final total 624403 .*n_tr=1200, window=83",
        {},
    ),
    (
        "fcd-total-kwargs",
        _nothing,
        FCD,
        r"FCD CDF ends at 624403; expected final total 622170 .*n_tr=1200, window=85",
        {"window": 85},
    ),
    (
        "fcd-negative",
        _fcd(lambda c: _edit(c, (0, 0), -1)),
        FCD,
        "FCD CDF has negative value -1 at index 0",
        {},
    ),
    (
        "fcd-nan",
        _fcd(lambda c: _edit(c, (10, 0), np.nan)),
        FCD,
        "FCD CDF has 1 NaN/Inf value.*index 10",
        {},
    ),
    (
        "fcd-non-integer-total",
        _fcd(lambda c: _edit(c, (9999, 0), c[9999, 0] + 1.5)),
        FCD,
        r"FCD CDF ends at 624404.5; expected final total 624403 \(within 1e-06 relative",
        {},
    ),
    ("myelin-length", _set(M, lambda d: d.myelin[:60]), M, "myelin has 60 values; expected 68", {}),
    (
        "myelin-nan",
        _set(M, lambda d: _edit(d.myelin, 3, np.nan)),
        M,
        "myelin has 1 NaN/Inf value.*index 3",
        {},
    ),
    (
        "gradient-length",
        _set(G, lambda d: np.append(d.gradient, 0.0)),
        G,
        "RSFC gradient has 69 values; expected 68",
        {},
    ),
    (
        "gradient-inf",
        _set(G, lambda d: _edit(d.gradient, 67, np.inf)),
        G,
        "RSFC gradient has 1 NaN/Inf value.*index 67",
        {},
    ),
    ("covariate-table", _set(M, lambda d: np.ones((68, 2))), M, r"table has shape \(68, 2\)", {}),
    (
        "names-length",
        lambda f, d: scipy.io.savemat(
            f / NAMES, {"region_descritption": np.array(["a", "b"], dtype=object).reshape(-1, 1)}
        ),
        NAMES,
        "2 region names; expected 68",
        {},
    ),
    (
        "names-variable",
        lambda f, d: scipy.io.savemat(f / NAMES, {"names": np.arange(3)}),
        NAMES,
        r"variable 'region_descritption' or 'region_description' not found",
        {},
    ),
    (
        "8-regions-no-myelin",
        _synthetic(covariates=False),
        M,
        r"missing; it is needed as a parcellation covariate \(myelin\) for 8 regions",
        {"split": "train", **SMALL},
    ),
    (
        "8-regions-no-gradient",
        lambda f, d: (_synthetic()(f, d), (f / G).unlink()),
        G,
        r"missing; it is needed as a parcellation covariate \(RSFC gradient\) for 8 regions",
        {"split": "train", **SMALL},
    ),
]


@pytest.mark.parametrize(
    ("mutate", "filename", "problem", "kwargs"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_bad_input_names_file_and_problem(test_folder, train, mutate, filename, problem, kwargs):
    folder = test_folder
    if mutate is None:
        folder = test_folder.parent / filename
    else:
        mutate(test_folder, train)
    kwargs = {"split": SPLIT, **kwargs}
    with pytest.raises(DataError, match=rf"{re.escape(filename)}: .*{problem}") as info:
        load_folder(folder, **kwargs)
    err = info.value
    assert err.path.is_absolute() and err.path.name == filename
    assert str(err).startswith(str(err.path))
    assert isinstance(err, ValueError)
