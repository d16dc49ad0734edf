"""File readers for the empirical data: csv matrices and vectors, MATLAB variables.

Each reader turns any read or parse failure into a `DataError` naming the file.
Shapes and values are checked afterwards, in `pmfm.data.checks`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import scipy.io

from pmfm.data.checks import DataError


def read_csv(path: Path) -> np.ndarray:
    """A comma-separated numeric table without header, as float64 of shape (rows, cols)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # loadtxt warns on empty files; handled below
            x = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise DataError(
            path, f"cannot parse as comma-separated numbers ({err})", "numbers only, no header"
        ) from err
    if x.size == 0:
        raise DataError(path, "file is empty", "comma-separated numbers")
    return x


def read_vector(path: Path) -> np.ndarray:
    """A csv holding one value per line (a single row is accepted too), shape (n,)."""
    x = read_csv(path)
    if min(x.shape) != 1:
        raise DataError(path, f"table has shape {x.shape}", "one value per line")
    return x.reshape(-1)


def read_mat(path: Path) -> dict:
    """Every variable of a MATLAB .mat file (v4 to v7.2), as scipy reads them."""
    try:
        return scipy.io.loadmat(path)
    except NotImplementedError as err:  # scipy raises this for v7.3 (HDF5) files
        raise DataError(path, f"cannot read ({err})", "a MATLAB v7 or older .mat file (save -v7)") from err
    except Exception as err:  # scipy raises several types for corrupt files
        raise DataError(path, f"cannot read as a .mat file ({err})", "a MATLAB .mat file") from err


def read_mat_variable(path: Path, names: tuple[str, ...]) -> np.ndarray:
    """The first of the variables `names` found in a MATLAB .mat file (v4 to v7.2)."""
    contents = read_mat(path)
    for name in names:
        if name in contents:
            return contents[name]
    found = sorted(k for k in contents if not k.startswith("__"))
    raise DataError(
        path,
        f"variable {' or '.join(repr(n) for n in names)} not found "
        f"(variables found: {', '.join(found) or 'none'})",
        f"a variable named {names[0]!r}",
    )


def _cell_to_str(item: object) -> str:
    """One entry of a MATLAB cell of strings, as loaded by scipy (nested arrays), to str."""
    while isinstance(item, np.ndarray):
        if item.size == 0:
            return ""
        if item.dtype.kind == "U" and item.size == 1:
            return str(item.reshape(-1)[0]).strip()
        item = item.reshape(-1)[0]
    return str(item).strip()


def read_names(path: Path, names: tuple[str, ...]) -> list[str]:
    """Region names from a .mat cell array (or char matrix) of strings."""
    raw = read_mat_variable(path, names)
    if raw.dtype.kind == "U":  # char matrix: one padded row per name
        return [str(s).strip() for s in raw.reshape(-1)]
    if raw.dtype != object:
        raise DataError(path, f"names have dtype {raw.dtype}", "a cell array of strings")
    return [_cell_to_str(item) for item in raw.reshape(-1)]
