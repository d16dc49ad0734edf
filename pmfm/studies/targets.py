"""The empirical targets a study costs against, also under a shortened protocol.

The bundled HCP FCD CDF counts the window pairs of 1,200-TR runs. A study run with fewer TRs (the
CPU reduced sizes) costs against the same empirical FCD distribution rescaled to its own pair count:
``round(cdf / total * pairs(n_tr))``. FC is unchanged. This keeps the target's shape but not the
extra spread a shorter run's FCD has: absolute KS values are not comparable with full-protocol
ones, differences between conditions at the same protocol are.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from omegaconf import DictConfig

from pmfm.data import EmpiricalData, load
from pmfm.data.checks import fcd_pair_count


def study_data(cfg: DictConfig, n_tr: int, variant) -> EmpiricalData:
    """The configured split; its FCD CDF rescaled to ``n_tr`` TRs when the files hold another length
    (``study.source_n_tr``, the files' own TRs)."""
    source_tr = int(cfg.study.get("source_n_tr") or n_tr)
    data = load(cfg.data.path, cfg.data.split, n_tr=source_tr, window=variant.window, n_bins=variant.n_bins)
    if source_tr == n_tr:
        return data
    cdf = np.asarray(data.fcd_cdf, dtype=np.float64)
    pairs = fcd_pair_count(n_tr, variant.window)
    rescaled = np.rint(cdf / cdf[-1] * pairs).astype(np.int64)  # (bins,), ends at pairs exactly
    return dataclasses.replace(data, fcd_cdf=rescaled)
