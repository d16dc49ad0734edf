"""Empirical data of one split, loaded from a folder and validated (docs/data.md).

A folder holds, for each split X (train, vali, test, ...):

    sc_X.csv    (N, N)  group structural connectivity, raw streamline weights, comma separated
    fc_X.csv    (N, N)  group functional connectivity (Pearson), diagonal 1
    fcd_X.mat   variable `X_aveM`, (n_bins, 1) or (1, n_bins): FCD cumulative histogram, counts

and, for the parcellation (optional when N == 68: the bundled HCP Desikan-68 ones are used):

    myelin.csv                          (N,) T1w/T2w ratio, one value per line
    rsfc_gradient.csv                   (N,) principal resting-state FC gradient
    Desikan_68_region_description.mat   variable `region_descritption` (sic), N names
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from pmfm.data.checks import (
    DataError,
    check_covariate,
    check_fc,
    check_fcd_cdf,
    check_names,
    check_sc,
)
from pmfm.data.readers import read_csv, read_mat_variable, read_names, read_vector

BUNDLED_NAME = "hcp_desikan68"
BUNDLED_REGIONS = 68  # Desikan-Killiany cortical regions, 34 left then 34 right
MYELIN_FILE = "myelin.csv"
GRADIENT_FILE = "rsfc_gradient.csv"
NAMES_FILE = "Desikan_68_region_description.mat"
NAMES_VARIABLES = ("region_descritption", "region_description")  # the release's spelling first
SPLIT_PATTERN = re.compile(r"[A-Za-z0-9_]+")

N_TR = 1200  # TRs per run (TR = 0.72 s)
WINDOW = 83  # FCD sliding-window length, TRs
N_BINS = 10000  # FCD histogram bins on [-0.9999, 1]


@dataclass(frozen=True, eq=False)
class EmpiricalData:
    """Validated empirical targets and covariates of one split. Arrays are read-only."""

    name: str  # dataset name: "hcp_desikan68" or the folder name
    split: str  # "train", "vali", "test", ...
    sc: np.ndarray  # (N, N) float64, raw streamline weights as in the file
    fc: np.ndarray  # (N, N) float64, Pearson, diagonal 1
    fcd_cdf: np.ndarray  # (n_bins,) cumulative FCD histogram in counts (int64; float64 for a mean)
    myelin: np.ndarray  # (N,) float64, T1w/T2w ratio, raw
    gradient: np.ndarray  # (N,) float64, principal RSFC gradient, raw
    region_names: tuple[str, ...]  # N names
    source: Path  # the folder the split was read from

    @property
    def n_regions(self) -> int:
        """Number of regions N."""
        return int(self.sc.shape[0])

    @property
    def n_bins(self) -> int:
        """Number of FCD histogram bins."""
        return int(self.fcd_cdf.shape[0])

    @property
    def fcd_total(self) -> int:
        """Final count of the FCD CDF: the number of window pairs."""
        return int(round(float(self.fcd_cdf[-1])))

    def basis(self) -> np.ndarray:
        """Parameter basis B = [1, myelin, gradient], shape (N, 3), float64 (docs/parameters.md)."""
        return np.column_stack([np.ones(self.n_regions), self.myelin, self.gradient])


def bundled_path() -> Path:
    """Folder of the bundled HCP S1200 Desikan-68 data (package data)."""
    return Path(str(resources.files("pmfm.data") / "bundled" / BUNDLED_NAME))


def split_files(split: str) -> tuple[str, str, str]:
    """File names of a split: (sc csv, fc csv, fcd mat)."""
    return f"sc_{split}.csv", f"fc_{split}.csv", f"fcd_{split}.mat"


def available_splits(folder: Path) -> list[str]:
    """Splits that have all three files in `folder`."""
    splits = {p.name[3:-4] for p in folder.glob("sc_*.csv")}
    return sorted(s for s in splits if all((folder / f).is_file() for f in split_files(s)))


def _require(folder: Path, split: str, filename: str) -> Path:
    path = folder / filename
    if not path.is_file():
        found = ", ".join(available_splits(folder)) or "none"
        raise DataError(
            path,
            f"missing file for split {split!r} (complete splits in this folder: {found})",
            f"{', '.join(split_files(split))} in {folder}",
        )
    return path


def _covariate(folder: Path, filename: str, n: int, what: str) -> np.ndarray:
    """A covariate from the folder, else the bundled one when N == 68."""
    path = folder / filename
    if not path.is_file():
        if n != BUNDLED_REGIONS:
            raise DataError(
                path,
                f"missing; it is needed as a parcellation covariate ({what}) for {n} regions, "
                f"and the bundled one only fits {BUNDLED_REGIONS}",
                f"{filename} with {n} values, one per line",
            )
        path = bundled_path() / filename
    return check_covariate(read_vector(path), path, n, what)


def _names(folder: Path, n: int) -> tuple[str, ...]:
    """Region names from the folder, else the bundled ones (N == 68), else region_000...."""
    path = folder / NAMES_FILE
    if not path.is_file():
        if n != BUNDLED_REGIONS:
            return tuple(f"region_{i:03d}" for i in range(n))
        path = bundled_path() / NAMES_FILE
    return check_names(read_names(path, NAMES_VARIABLES), path, n)


def _frozen(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    x.setflags(write=False)
    return x


def load_folder(
    path: str | Path,
    split: str = "train",
    *,
    n_tr: int = N_TR,
    window: int = WINDOW,
    n_bins: int = N_BINS,
) -> EmpiricalData:
    """Load and validate split `split` from folder `path`.

    `n_tr` (TRs per run) and `window` (FCD window, TRs) fix the FCD CDF's expected final count,
    `fcd_pair_count(n_tr, window)`; `n_bins` its length. Raises `DataError` on any problem.
    """
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(folder, "data folder not found", "a folder with sc_/fc_/fcd_ split files")
    if not isinstance(split, str) or not SPLIT_PATTERN.fullmatch(split):
        raise DataError(folder, f"invalid split name {split!r}", "letters, digits and _ only")
    sc_file, fc_file, fcd_file = (_require(folder, split, f) for f in split_files(split))

    sc = check_sc(read_csv(sc_file), sc_file)  # (N, N)
    fc = check_fc(read_csv(fc_file), fc_file)  # (N, N)
    if fc.shape != sc.shape:
        raise DataError(
            fc_file,
            f"FC has {fc.shape[0]} regions but {sc_file.name} has {sc.shape[0]}",
            f"FC of shape {sc.shape}, matching SC",
        )
    n = sc.shape[0]
    variable = f"{split}_aveM"
    fcd = check_fcd_cdf(
        read_mat_variable(fcd_file, (variable,)), fcd_file, n_bins=n_bins, n_tr=n_tr, window=window
    )  # (n_bins,)

    return EmpiricalData(
        name=folder.name,
        split=split,
        sc=_frozen(sc),
        fc=_frozen(fc),
        fcd_cdf=_frozen(fcd),
        myelin=_frozen(_covariate(folder, MYELIN_FILE, n, "myelin")),
        gradient=_frozen(_covariate(folder, GRADIENT_FILE, n, "RSFC gradient")),
        region_names=_names(folder, n),
        source=folder,
    )


def load_bundled(split: str = "train", **kwargs) -> EmpiricalData:
    """The bundled HCP S1200 Desikan-68 data, split "train" or "vali" (see `load_folder`)."""
    return load_folder(bundled_path(), split, **kwargs)


def load(path: str | Path | None = None, split: str = "train", **kwargs) -> EmpiricalData:
    """Load split `split` from folder `path`, or from the bundled data when `path` is None."""
    if path is None:
        return load_bundled(split, **kwargs)
    return load_folder(path, split, **kwargs)
