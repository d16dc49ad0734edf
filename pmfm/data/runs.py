"""Parcellated BOLD runs: finding a cohort's run files, reading and checking them
(docs/data.md#targets-from-bold).

A run is one file holding a regions x TRs array: ``.npy``, ``.csv`` (comma separated, no header) or
``.mat`` (one 2-D numeric variable). A cohort folder holds one folder per subject (or group) with
its run files; runs are taken in file-name order, numbers compared as numbers (run2 before run10).
Every problem stops with a :class:`~pmfm.data.checks.DataError` naming the file and what was expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pmfm.data.checks import DataError, _check_finite
from pmfm.data.readers import read_csv, read_mat

RUN_SUFFIXES = (".npy", ".csv", ".mat")


@dataclass(frozen=True)
class Subject:
    """One subject (or group) of a cohort folder: its name and run files in file-name order."""

    name: str
    folder: Path
    runs: tuple[Path, ...]


def natural_key(name: str) -> tuple:
    """Sort key that compares the digits in a name as numbers: run2 < run10."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name))


def run_files(folder: Path) -> tuple[Path, ...]:
    """The run files of a folder (``RUN_SUFFIXES``, not hidden), in natural file-name order."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in RUN_SUFFIXES and not p.name.startswith(".")
    ]
    return tuple(sorted(files, key=lambda p: natural_key(p.name)))


def find_subjects(path: str | Path) -> list[Subject]:
    """The subjects of a cohort folder: its sub-folders holding run files, sorted by name; or, when
    it holds run files itself and no such sub-folder, the folder as one subject."""
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(folder, "BOLD folder not found", "a folder of subject folders holding run files")
    subjects = []
    for sub in sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
    ):
        runs = run_files(sub)
        if runs:
            subjects.append(Subject(sub.name, sub, runs))
    if not subjects and (runs := run_files(folder)):
        subjects.append(Subject(folder.name, folder, runs))
    if not subjects:
        raise DataError(
            folder,
            "no run files found, neither in sub-folders nor in the folder itself",
            f"<subject>/<run> files ending in {', '.join(RUN_SUFFIXES)}, regions x TRs",
        )
    return subjects


def read_run(path: Path) -> np.ndarray:
    """The array of a run file as float64 (not yet checked): .npy, .csv or .mat (one 2-D variable)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path)
    if suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise DataError(
                path, f"cannot read as a .npy file ({err})", "a NumPy array, regions x TRs"
            ) from err
        if x.dtype.kind not in "biuf":
            raise DataError(path, f"array has dtype {x.dtype}", "a numeric array, regions x TRs")
        return x.astype(np.float64)
    if suffix == ".mat":
        return _mat_array(path)
    raise DataError(path, f"unknown run file type {suffix!r}", f"one of {', '.join(RUN_SUFFIXES)}")


def _mat_array(path: Path) -> np.ndarray:
    """The one 2-D numeric variable of a .mat file."""
    contents = read_mat(path)
    variables = {k: v for k, v in contents.items() if not k.startswith("__")}
    arrays = [
        v for v in variables.values() if isinstance(v, np.ndarray) and v.dtype.kind in "biuf" and v.ndim == 2
    ]
    if len(arrays) != 1:
        found = ", ".join(f"{k} {np.shape(v)}" for k, v in variables.items()) or "none"
        raise DataError(
            path,
            f"{len(arrays)} 2-D numeric variables (variables found: {found})",
            "exactly one 2-D numeric variable, regions x TRs",
        )
    return arrays[0].astype(np.float64)


def check_run(
    x: np.ndarray, path: Path, *, n_tr: int, window: int, n_regions: int, regions_from: str
) -> np.ndarray:
    """A run, regions x TRs: 2-D, ``n_regions`` rows (``regions_from`` says whose count that is),
    finite, at least one FCD window long, exactly ``n_tr`` TRs, no constant region. Returns float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise DataError(path, f"run has shape {x.shape}", "a 2-D array, regions x TRs")
    n, t = x.shape
    if n != n_regions:
        hint = " (TRs x regions? runs are regions x TRs)" if t == n_regions else ""
        raise DataError(path, f"run has {n} regions (rows){hint}", f"{n_regions} regions, as {regions_from}")
    _check_finite(x, path, "run")
    if t < window:
        raise DataError(
            path, f"run has {t} TRs, too short for one FCD window", f"at least {window} TRs (the FCD window)"
        )
    if t != n_tr:
        raise DataError(path, f"run has {t} TRs", f"n_tr = {n_tr} TRs per run (n_tr= sets the runs' length)")
    flat = np.ptp(x, axis=1) == 0
    if flat.any():
        raise DataError(
            path, f"region {int(np.argmax(flat))} is constant over the run", "every region's series to vary"
        )
    return x
