"""A configured simulator: the ``simulator`` config group as one object the stages share."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from pmfm.params import CIRCUITS, FIC_BOUNDS, ParamSpace, fic_bounds
from pmfm.sim import fic
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
    """Circuit, protocol, integrator, precision and noise mode of the simulations of a run.

    ``circuit`` is the one choice that makes a run the pMFM's ("pmfm") or the FIC model's ("fic"):
    it selects the dynamics, the parameter space (:meth:`param_space`: names, bounds, starts) and,
    through ``conf/simulator/fic.yaml``, the cost variant and protocol defaults. ``eval_dt`` is
    the step of the validation and test stages when it differs from training's (FIC: 0.0005 s).
    """

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
    circuit: str = "pmfm"  # pmfm (Kong2021) or fic (feedback inhibition control, SPEC section 9)
    eval_dt: float | None = None  # s, step of validation and test (None: the training protocol's)
    # FIC only (pmfm.sim.fic)
    bounds: str = "release"  # FIC bounds: release (from the mean empirical FC) or fixed (the seed's)
    sc_transform: str = "none"  # none, or log: log(1 + SC) before scaling to a maximum of 0.02
    target_rate: float = fic.TARGET_RATE  # Hz, excitatory rate w_IE is solved for
    rate_band: tuple[float, float] = fic.RATE_BAND  # Hz, valid mean excitatory rates

    @property
    def resolved_method(self) -> str:
        """The integrator that actually runs on this device (``auto`` resolved; FIC: euler)."""
        return resolve_method(self.method, self.device, self.circuit)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"simulator.method={self.method!r}; expected one of {list(METHODS)}")
        if self.noise not in NOISE_MODES:
            raise ValueError(f"simulator.noise={self.noise!r}; expected one of {NOISE_MODES}")
        if self.circuit not in CIRCUITS:
            raise ValueError(f"simulator.circuit={self.circuit!r}; expected one of {CIRCUITS}")
        if self.bounds not in FIC_BOUNDS:
            raise ValueError(f"simulator.bounds={self.bounds!r}; expected one of {FIC_BOUNDS}")
        if self.sc_transform not in fic.SC_TRANSFORMS:
            raise ValueError(
                f"simulator.sc_transform={self.sc_transform!r}; expected one of {fic.SC_TRANSFORMS}"
            )
        object.__setattr__(self, "rate_band", tuple(float(b) for b in self.rate_band))

    def param_space(self, data, mode: str = "parametric") -> ParamSpace:
        """The circuit's parameter space on ``data``'s basis (FIC release bounds: its mean FC)."""
        if self.circuit == "pmfm":
            return ParamSpace(data.basis(), mode=mode)  # type: ignore[arg-type]
        from pmfm.cost import upper_triangle

        mean_fc = float(upper_triangle(np.array(data.fc, dtype=np.float64)).mean())
        bounds = fic_bounds(mean_fc, self.bounds)
        return ParamSpace(data.basis(), bounds=bounds, mode=mode, circuit="fic")  # type: ignore[arg-type]

    def for_evaluation(self) -> Simulator:
        """The simulator of the validation and test stages (``eval_dt`` applied, if set)."""
        if self.eval_dt is None or self.eval_dt == self.protocol.dt:
            return self
        return dataclasses.replace(self, protocol=self.protocol.at_dt(self.eval_dt))

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
            circuit=cfg.get("circuit", "pmfm"),
            eval_dt=cfg.get("eval_dt"),
            bounds=cfg.get("bounds", "release"),
            sc_transform=cfg.get("sc_transform", "none"),
            target_rate=cfg.get("target_rate", fic.TARGET_RATE),
            rate_band=tuple(cfg.get("rate_band", fic.RATE_BAND)),
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
        if space.circuit != self.circuit:
            raise ValueError(
                f"parameters of the {space.circuit} space given to a simulator of the {self.circuit} circuit"
            )
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
            sc_transform=self.sc_transform,
            target_rate=self.target_rate,
            rate_band=self.rate_band,
            **kw,
        )
