"""Empirical data: SC, FC, FCD and parcellation covariates of one split, validated on load.

Needs only numpy and scipy. The HCP S1200 Desikan-68 group data ship with the package
(`bundled_path()`, see bundled/hcp_desikan68/PROVENANCE.md); any folder in the same format loads
with `load_folder`.
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

__all__ = [
    "DataError",
    "EmpiricalData",
    "available_splits",
    "bundled_path",
    "fcd_pair_count",
    "load",
    "load_bundled",
    "load_folder",
]
