"""How a run simulates: one frozen settings object shared by every stage (docs/protocol.md).

Its fields are the ``simulator`` config group plus the ``protocol`` group and ``device``; Hydra
checks the YAML against this class (pmfm.pipelines.config derives the schema from it), so each
setting and its default is written here once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from pmfm.params import CIRCUITS, FIC_BOUNDS, ParamSpace, fic_bounds
from pmfm.physics import fic
from pmfm.sim.protocol import SimProtocol
from pmfm.sim.registry import METHODS, resolve_method

DTYPES = {"float32": torch.float32, "float64": torch.float64}
NOISE_MODES = ("independent", "common")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None): the first CUDA device if there is one, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class Simulator:
    """Circuit, protocol, integrator, precision, device and noise mode of a run's simulations.

    ``circuit`` makes a run the pMFM's ("pmfm") or the FIC model's ("fic"): it selects the dynamics,
    the parameter space (:meth:`param_space`) and, through the configs, the cost and protocol.
    """

    protocol: SimProtocol = field(default_factory=SimProtocol)
    name: str = "mfm_euler"  # the config's name, recorded with results
    method: str = "euler"  # euler, torchdiffeq, compiled, fused, or auto (pmfm.sim.registry)
    dtype: str = "float32"  # float32 (the reference) or float64
    device: str = "cpu"  # cpu, cuda, cuda:1, ...; auto: CUDA when there is one
    coupling: str = "auto"  # fixed_order (batch-invariant, the CPU's auto) or matmul (CUDA's auto)
    chunk_size: int | None = None  # simulations per call; None: per device (pmfm.evaluate)
    noise: str = "independent"  # independent (a stream per simulation) or common (a stream per repeat)
    precision: str = "tf32"  # the fused kernel's coupling product: tf32, tf32x3 or ieee
    layout: str = "auto"  # the fused kernel's region layout: auto, split or wide (pin it on CUDA)
    memory_budget_gb: float = 8.0  # GiB of GPU memory for simulation plus cost (pmfm.evaluate)
    cost_precision: str = "float32"  # FC and FCD products on CUDA: float32, or tf32 (pmfm.cost)
    circuit: str = "pmfm"  # pmfm (Kong2021) or fic (docs/fic.md)
    eval_dt: float | None = None  # s, step of validation and test (None: the protocol's)
    bounds: str = "release"  # FIC: release (from the mean empirical FC) or fixed (the seed's)
    sc_transform: str = "none"  # FIC: none, or log: log(1 + SC) before scaling to a maximum of 0.02
    target_rate: float = fic.TARGET_RATE  # Hz, FIC: the excitatory rate w_IE is solved for
    rate_band: tuple[float, float] = fic.RATE_BAND  # Hz, FIC: valid mean excitatory rates

    def __post_init__(self):
        if isinstance(self.dtype, torch.dtype):  # torch.float64 is welcome, stored by name
            object.__setattr__(self, "dtype", str(self.dtype).removeprefix("torch."))
        choices = {
            "method": METHODS,
            "dtype": tuple(DTYPES),
            "noise": NOISE_MODES,
            "circuit": CIRCUITS,
            "bounds": FIC_BOUNDS,
            "sc_transform": fic.SC_TRANSFORMS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"simulator.{name}={getattr(self, name)!r}; expected one of {list(allowed)}")
        object.__setattr__(self, "device", str(resolve_device(self.device)))
        object.__setattr__(self, "rate_band", tuple(float(b) for b in self.rate_band))
        if not isinstance(self.protocol, SimProtocol):
            object.__setattr__(self, "protocol", SimProtocol(**self.protocol))

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def resolved_method(self) -> str:
        """The integrator that actually runs on this device (``auto`` resolved; FIC: euler)."""
        return resolve_method(self.method, self.torch_device, self.circuit)

    def param_space(self, data, mode: str = "parametric") -> ParamSpace:
        """The circuit's parameter space on ``data``'s basis (FIC release bounds: its mean FC)."""
        if self.circuit == "pmfm":
            return ParamSpace(data.basis(), mode=mode)  # type: ignore[arg-type]
        fc = np.asarray(data.fc, dtype=np.float64)
        mean_fc = float(fc[np.triu_indices(len(fc), 1)].mean())
        bounds = fic_bounds(mean_fc, self.bounds)
        return ParamSpace(data.basis(), bounds=bounds, mode=mode, circuit="fic")  # type: ignore[arg-type]

    def for_evaluation(self) -> Simulator:
        """The simulator of the validation and test stages (``eval_dt`` applied, if set)."""
        if self.eval_dt is None or self.eval_dt == self.protocol.dt:
            return self
        return dataclasses.replace(self, protocol=self.protocol.at_dt(self.eval_dt))

    def describe(self) -> str:
        """'cpu (mfm_euler: euler, float32)': where and how it runs, for logs and summaries."""
        return f"{self.device} ({self.name}: {self.resolved_method}, {self.dtype})"
