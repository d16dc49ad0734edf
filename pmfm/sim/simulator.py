"""A configured simulator: the ``simulator`` config group as one object the stages share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from pmfm.params import ParamSpace
from pmfm.sim.noise import Noise
from pmfm.sim.protocol import SimProtocol
from pmfm.sim.simulate import METHODS, SimResult, resolve_method, simulate

DTYPES = {"float32": torch.float32, "float64": torch.float64}
NOISE_MODES = ("independent", "common")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None): the first CUDA device if there is one, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class Simulator:
    """Protocol, integrator, precision and noise mode of the pMFM simulations of a run."""

    protocol: SimProtocol = field(default_factory=SimProtocol)
    name: str = "mfm_euler"
    method: str = "euler"
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    coupling: str = "auto"
    chunk_size: int | None = None
    noise: str = "independent"
    precision: str = "tf32"  # the fused kernel's coupling product (pmfm.sim.fused)
    layout: str = "auto"  # the fused kernel's region layout: auto, split or wide (pmfm.sim.fused)
    memory_budget_gb: float = 8.0  # GiB of GPU memory for simulation plus cost (pmfm.evaluate)
    cost_precision: str = "float32"  # FC and FCD products on CUDA: float32 or tf32 (pmfm.cost)

    @property
    def resolved_method(self) -> str:
        """The integrator that actually runs on this device (``auto`` resolved)."""
        return resolve_method(self.method, self.device)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"simulator.method={self.method!r}; expected one of {list(METHODS)}")
        if self.noise not in NOISE_MODES:
            raise ValueError(f"simulator.noise={self.noise!r}; expected one of {NOISE_MODES}")

    @classmethod
    def from_config(cls, cfg: Mapping, device: str | torch.device | None = "auto") -> Simulator:
        """Build from a ``simulator`` config (a dict or an OmegaConf node)."""
        if cfg["dtype"] not in DTYPES:
            raise ValueError(f"simulator.dtype={cfg['dtype']!r}; expected one of {sorted(DTYPES)}")
        return cls(
            protocol=SimProtocol(**dict(cfg["protocol"])),
            name=cfg["name"],
            method=cfg["method"],
            dtype=DTYPES[cfg["dtype"]],
            device=resolve_device(device),
            coupling=cfg.get("coupling", "auto"),
            chunk_size=cfg.get("chunk_size"),
            noise=cfg.get("noise", "independent"),
            precision=cfg.get("precision", "tf32"),
            layout=cfg.get("layout", "auto"),
            memory_budget_gb=cfg.get("memory_budget_gb", 8.0),
            cost_precision=cfg.get("cost_precision", "float32"),
        )

    def noise_for(self, n_sets: int, repeats: int, seed: int, first_key: int = 0) -> Noise:
        """Noise for ``n_sets`` parameter sets x ``repeats`` repeats, set-major.

        Independent: simulation ``i * repeats + r`` has stream ``first_key + i * repeats + r``, so a
        set's noise depends only on its position in the whole run. Common random numbers: repeat r
        of every set shares stream r (SPEC section 7).
        """
        if self.noise == "common":
            return Noise.common(seed, torch.arange(repeats).repeat(n_sets))
        return Noise.independent(seed, first_key + torch.arange(n_sets * repeats))

    def run(self, theta, space: ParamSpace, sc, noise: Noise, **kw) -> SimResult:
        """Simulate (B, P) parameters; see :func:`pmfm.sim.simulate`."""
        return simulate(
            theta,
            space,
            sc,
            protocol=self.protocol,
            noise=noise,
            method=self.method,
            device=self.device,
            dtype=self.dtype,
            chunk_size=self.chunk_size,
            coupling=self.coupling,
            precision=self.precision,
            layout=self.layout,
            **kw,
        )
