"""Target folders: what a fit matches, with how it was made (docs/data.md#targets-from-bold).

A target is a data folder (docs/data.md#folder-format: ``sc_X.csv``, ``fc_X.csv``, ``fcd_X.mat`` per
split X, covariates) plus, when ``python -m pmfm.targets`` made it, ``target.json``::

    {"source": "bold" | "synthetic", "tr_s": 0.72, "n_tr": 1200,
     "runs": {"train": [...], "vali": [...]}, "window": 83, "n_bins": 10000, ...}

and, for a synthetic subject, ``truth.csv`` (a header of the coefficient names and one row: the
parameters it was simulated with) and ``truth_maps.csv`` (their regional maps). A folder without
``target.json`` is a target of 1,200 TRs at 0.72 s (the HCP runs of the bundled group).
:func:`find_targets` lists one target folder, or a folder of target folders sorted by name.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.io import savemat

from pmfm.data.checks import DataError
from pmfm.data.folder import (
    GRADIENT_FILE,
    MYELIN_FILE,
    N_TR,
    NAMES_FILE,
    NAMES_VARIABLES,
    EmpiricalData,
    available_splits,
    load_folder,
    split_files,
)

TARGET_FILE = "target.json"
TRUTH_FILE = "truth.csv"
TRUTH_MAPS_FILE = "truth_maps.csv"
TR_S = 0.72  # s, the TR of a folder without target.json (HCP)
SOURCES = ("bold", "synthetic", "folder")  # "folder": a data folder without target.json


@dataclass(frozen=True, eq=False)
class Target:
    """One target folder: where it is, the runs it was made from, and its truth when synthetic."""

    name: str  # the folder's name (a subject, a group)
    folder: Path  # absolute
    tr_s: float  # s, TR of the runs (a fit's protocol follows it: pmfm.sim.protocol.protocol_for_run)
    n_tr: int  # TRs per run: the FCD CDF ends at fcd_pair_count(n_tr, window)
    source: str  # "bold", "synthetic" or "folder" (no target.json)
    truth: np.ndarray | None = None  # (P,) float64 parameters a synthetic subject was simulated with
    truth_names: tuple[str, ...] = ()  # their names (truth.csv's header)
    info: dict = field(default_factory=dict, repr=False)  # target.json as read ({} without one)

    @property
    def splits(self) -> list[str]:
        """The splits with all three files in the folder (train, vali, test, ...)."""
        return available_splits(self.folder)

    def load(self, split: str = "train", *, window: int = 83, n_bins: int = 10_000) -> EmpiricalData:
        """Split ``split`` of this target, checked, its FCD CDF expected to count ``n_tr``-TR runs."""
        return load_folder(self.folder, split, n_tr=self.n_tr, window=window, n_bins=n_bins)


def is_target(folder: Path) -> bool:
    """A folder with target.json or with at least one complete split."""
    return folder.is_dir() and ((folder / TARGET_FILE).is_file() or bool(available_splits(folder)))


def read_target(path: str | Path) -> Target:
    """The target in folder ``path``: target.json's TR, run length and source, truth.csv's truth."""
    folder = Path(path).expanduser().resolve()
    if not is_target(folder):
        raise DataError(folder, "not a target folder", f"{TARGET_FILE} or sc_/fc_/fcd_ split files")
    info_path = folder / TARGET_FILE
    if not info_path.is_file():
        return Target(folder.name, folder, TR_S, N_TR, "folder")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(info_path, f"cannot read as JSON ({err})", "a JSON object") from err
    if not isinstance(info, dict):
        raise DataError(info_path, f"holds a {type(info).__name__}", "a JSON object")
    tr_s, n_tr, source = info.get("tr_s"), info.get("n_tr"), info.get("source", "bold")
    if not isinstance(tr_s, int | float) or isinstance(tr_s, bool) or not tr_s > 0:
        raise DataError(info_path, f"tr_s is {tr_s!r}", "a positive number of seconds")
    if not isinstance(n_tr, int) or isinstance(n_tr, bool) or n_tr < 1:
        raise DataError(info_path, f"n_tr is {n_tr!r}", "a positive whole number of TRs")
    if source not in SOURCES:
        raise DataError(info_path, f"source is {source!r}", f"one of {', '.join(SOURCES)}")
    truth, names = _read_truth(folder / TRUTH_FILE)
    return Target(folder.name, folder, float(tr_s), n_tr, source, truth, names, info)


def _read_truth(path: Path) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """truth.csv: a header of names and one row of values; (None, ()) without the file."""
    if not path.is_file():
        return None, ()
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    try:
        names = tuple(n.strip() for n in lines[0].split(","))
        values = np.array([float(v) for v in lines[1].split(",")], dtype=np.float64)
    except (IndexError, ValueError) as err:
        raise DataError(path, f"cannot read ({err})", "a header of names and one row of numbers") from err
    if len(lines) != 2 or len(values) != len(names) or not np.isfinite(values).all():
        raise DataError(
            path,
            f"{len(lines)} lines, {len(names)} names, {len(values)} values",
            "one row, one finite value a name",
        )
    return values, names


def find_targets(path: str | Path) -> list[Target]:
    """The targets at ``path``: the folder itself when it is one, else its target sub-folders sorted
    by name (hidden ones skipped). Raises :class:`DataError` when there is none."""
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(folder, "target folder not found", "a target folder or a folder of target folders")
    if is_target(folder):
        return [read_target(folder)]
    subs = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and is_target(p))
    if not subs:
        raise DataError(
            folder,
            "no target here",
            f"a folder with {TARGET_FILE} or sc_/fc_/fcd_ split files, or a folder of such folders",
        )
    return [read_target(p) for p in subs]


def write_target(
    folder: str | Path,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    sc: np.ndarray,
    covariates: EmpiricalData,
    info: dict,
    truth: tuple[tuple[str, ...], np.ndarray] | None = None,
    truth_maps: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a target folder atomically (into a hidden sibling, then renamed; an old one is replaced).

    ``splits``: split -> (FC (N, N), FCD CDF (n_bins,)); every split gets ``sc``. The covariates and
    region names come from ``covariates``. ``info`` becomes target.json (it must hold tr_s, n_tr,
    source). ``truth``: (names, (P,) values) for truth.csv; ``truth_maps``: column -> (N,) values
    for truth_maps.csv (one row per region).
    """
    folder = Path(folder)
    tmp = folder.parent / f".{folder.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for split, (fc, cdf) in splits.items():
        sc_file, fc_file, fcd_file = split_files(split)
        np.savetxt(tmp / sc_file, sc, delimiter=",", fmt="%.17g")
        np.savetxt(tmp / fc_file, fc, delimiter=",", fmt="%.17g")
        savemat(tmp / fcd_file, {f"{split}_aveM": np.asarray(cdf, dtype=np.float64)[:, None]})
    np.savetxt(tmp / MYELIN_FILE, covariates.myelin, fmt="%.17g")
    np.savetxt(tmp / GRADIENT_FILE, covariates.gradient, fmt="%.17g")
    names = np.empty((len(covariates.region_names), 1), dtype=object)
    names[:, 0] = list(covariates.region_names)
    savemat(tmp / NAMES_FILE, {NAMES_VARIABLES[0]: names})
    if truth is not None:
        header, values = truth
        row = ",".join(f"{v:.17g}" for v in np.asarray(values, dtype=np.float64))
        (tmp / TRUTH_FILE).write_text(",".join(header) + "\n" + row + "\n")
    if truth_maps is not None:
        table = np.column_stack([np.arange(len(sc)), *truth_maps.values()])
        header_maps = ",".join(["region", *truth_maps])
        np.savetxt(tmp / TRUTH_MAPS_FILE, table, delimiter=",", header=header_maps, comments="", fmt="%.17g")
    (tmp / TARGET_FILE).write_text(json.dumps(info, indent=2) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder
