"""Cost variants: how FC and FCD are turned into a cost (docs/cost.md#variants)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class CostVariant:
    """How FC and FCD are turned into a cost (docs/cost.md#variants).

    Kong2021: FC cost on Fisher-z FC, FCD histogram on [-0.9999, 1], total = FC cost + KS.
    DELSSOME (Zeng et al. 2026, the seed's repository): raw FC correlation, histogram on [-1, 1],
    total = FC cost + KS + FC L1.
    """

    name: str = "kong2021"
    fisher_z: bool = True  # correlate atanh(FC) (Kong2021) or raw FC (DELSSOME)
    hist_min: float = -0.9999  # FCD histogram left edge [correlation]; DELSSOME uses -1
    hist_max: float = 1.0  # FCD histogram right edge [correlation], inclusive in the last bin
    n_bins: int = 10_000  # equal-width FCD histogram bins
    window: int = 83  # TRs per sliding window (83 x 0.72 s ~ 60 s), step 1 TR
    use_l1: bool = False  # total = fc_cost + ks (+ fc_l1 when True)
    invalid_value: float = 10.0  # a term with no valid repeat in training/validation ("fit")

    def __post_init__(self) -> None:
        if not self.hist_max > self.hist_min:
            raise ValueError(f"hist_max ({self.hist_max}) must exceed hist_min ({self.hist_min})")
        if self.n_bins < 1:
            raise ValueError(f"n_bins must be positive, got {self.n_bins}")
        if self.window < 2:
            raise ValueError(f"window must be at least 2 TRs, got {self.window}")

    @property
    def fcd_settings(self) -> dict:
        """The FCD's window and histogram: what an FCD CDF's bins mean."""
        return {k: getattr(self, k) for k in ("window", "n_bins", "hist_min", "hist_max")}


KONG2021 = CostVariant()
DELSSOME = CostVariant(name="delssome", fisher_z=False, hist_min=-1.0, use_l1=True)
# The FIC model's cost (docs/fic.md#protocol-and-cost): DELSSOME's terms, and 5 for a term with no valid run
FIC = CostVariant(name="fic", fisher_z=False, hist_min=-1.0, use_l1=True, invalid_value=5.0)
_VARIANTS = {v.name: v for v in (KONG2021, DELSSOME, FIC)}


CIRCUIT_COSTS = {"pmfm": "kong2021", "fic": "fic"}  # what cost=auto means for each circuit model


def cost_variant(name: str, circuit: str = "pmfm", **overrides) -> CostVariant:
    """The named cost variant ("kong2021", "delssome" or "fic"), with any fields overridden.

    ``"auto"`` (the configs' default) is the circuit model's own: kong2021 for the pMFM, fic for
    the FIC model (docs/fic.md).

    >>> cost_variant("kong2021", window=40).window
    40
    >>> cost_variant("auto", circuit="fic").invalid_value
    5.0
    """
    key = name.lower()
    if key == "auto":
        if circuit not in CIRCUIT_COSTS:
            raise ValueError(f"unknown circuit {circuit!r}; known: {sorted(CIRCUIT_COSTS)}")
        key = CIRCUIT_COSTS[circuit]
    if key not in _VARIANTS:
        raise ValueError(f"unknown cost variant {name!r}; known: {sorted(_VARIANTS)}")
    fields = {f.name for f in dataclasses.fields(CostVariant)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown CostVariant field(s) {unknown}; fields: {sorted(fields)}")
    return dataclasses.replace(_VARIANTS[key], **overrides)
