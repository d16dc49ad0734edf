"""Empirical data: SC, FC, FCD and parcellation covariates of one split, validated on load.

Needs only numpy and scipy. The HCP S1200 Desikan-68 group data ship with the package
(`bundled_path()`, see bundled/hcp_desikan68/PROVENANCE.md); any folder in the same format loads
with `load_folder`. Targets (`find_targets`, docs/data.md#targets-from-bold) are such folders with a
target.json saying which runs, of what TR and length, they were made from; `pmfm.data.runs` reads
parcellated BOLD runs.
"""

from pmfm.data.checks import DataError, fcd_pair_count
from pmfm.data.folder import (
    EmpiricalData,
    available_splits,
    bundled_path,
    load,
    load_bundled,
    load_folder,
)
from pmfm.data.runs import Subject, check_run, find_subjects, read_run
from pmfm.data.targets import TARGET_FILE, TRUTH_FILE, Target, find_targets, read_target, write_target

__all__ = [
    "TARGET_FILE",
    "TRUTH_FILE",
    "DataError",
    "EmpiricalData",
    "Subject",
    "Target",
    "available_splits",
    "bundled_path",
    "check_run",
    "fcd_pair_count",
    "find_subjects",
    "find_targets",
    "load",
    "load_bundled",
    "load_folder",
    "read_run",
    "read_target",
    "write_target",
]
