"""The conditioning vector of a subject or group: what a conditioned surrogate knows of the target data.

A conditioned network (``model=transformer_cond``) predicts the cost of a parameter set against the
data summarised here, so one network can score sets for several subjects or groups: pass each
group's vector to :meth:`pmfm.models.SurrogateModule.predict` (``condition=``).

    vector = empirical_condition(data.fc, data.fcd_cdf)   # (N(N-1)/2 + n_points,)
"""

from __future__ import annotations

import torch

CDF_POINTS = 32  # samples of the FCD CDF kept (evenly spaced bins): its shape, not its 10,000 bins


def empirical_condition(fc, fcd_cdf, n_points: int = CDF_POINTS) -> torch.Tensor:
    """FC upper triangle (N(N-1)/2,) then the FCD CDF, normalised to end at 1, at ``n_points`` bins.

    ``fc``: (N, N) empirical FC; ``fcd_cdf``: (n_bins,) cumulative counts of the FCD values.
    """
    fc = torch.tensor(fc, dtype=torch.float32)  # a copy: read-only numpy arrays welcome
    cdf = torch.tensor(fcd_cdf, dtype=torch.float32).flatten()
    if fc.ndim != 2 or fc.shape[0] != fc.shape[1]:
        raise ValueError(f"fc must be (N, N), got {tuple(fc.shape)}")
    if len(cdf) < n_points or not float(cdf[-1]) > 0:
        raise ValueError(f"fcd_cdf must hold at least {n_points} bins and end above 0, got {len(cdf)} bins")
    rows, cols = torch.triu_indices(fc.shape[0], fc.shape[0], offset=1)
    at = torch.linspace(0, len(cdf) - 1, n_points).round().long()
    return torch.cat([fc[rows, cols], cdf[at] / cdf[-1]])  # (N(N-1)/2 + n_points,)
