"""The integrators behind one interface, keyed by (circuit, method) (docs/protocol.md#integrators).

An integrator is ``integrate(params, c, protocol, noise, *, record_s, **options) -> dict`` holding
``bold`` (B, N, n_tr) (and ``s``, FIC ``rate``, when it has them). ``params`` are the regional values
(:class:`pmfm.params.RegionalParams`), ``c`` (N, N) the circuit's normalised coupling matrix,
``noise`` the step normals as a :class:`~pmfm.sim.noise.NoiseStream` (``draws="stream"``) or the
keyed :class:`~pmfm.sim.noise.Noise` itself for paths that draw on the device (``draws="keyed"``),
``options`` the :class:`~pmfm.sim.simulator.Simulator` settings it reads, by name, and (where
``reports``) ``progress``, called with the share of the run integrated since its last call.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec

import torch

from pmfm.physics import dynamics

METHODS = ("euler", "torchdiffeq", "compiled", "fused", "auto")
COUPLINGS = {"matmul": dynamics.matmul_coupling, "fixed_order": dynamics.fixed_order_coupling}


@dataclass(frozen=True)
class Integrator:
    """Where an integrator lives and what it needs."""

    target: str  # "module:function"; imported on first use (fused needs Triton, torchdiffeq its package)
    draws: str = "stream"  # "stream": step normals served by NoiseStream; "keyed": the Noise itself
    options: tuple[str, ...] = ("coupling",)  # Simulator settings passed as keywords
    explicit_noise: bool = True  # accepts Noise.explicit (else the plain Euler path runs instead)
    padded: bool = True  # CPU chunks padded to whole SIMD vectors: batch-invariant (pmfm.sim.batching)
    max_chunk: int | None = None  # most simulations per call (None: per device)
    reports: bool = True  # calls progress(share of the run done) as it goes (else once, at the end)

    def load(self) -> Callable[..., dict[str, torch.Tensor]]:
        module, function = self.target.split(":")
        return getattr(importlib.import_module(module), function)


INTEGRATORS: dict[tuple[str, str], Integrator] = {
    ("pmfm", "euler"): Integrator("pmfm.sim.euler:integrate_euler"),
    ("pmfm", "torchdiffeq"): Integrator("pmfm.sim.odeint:integrate_odeint"),
    ("pmfm", "compiled"): Integrator(
        "pmfm.sim.compiled:integrate_compiled", draws="keyed", options=(), explicit_noise=False, reports=False
    ),
    ("pmfm", "fused"): Integrator(
        "pmfm.sim.fused:integrate_fused",
        draws="keyed",
        options=("precision", "layout"),
        padded=False,
        max_chunk=65_536,  # BOLD alone: 21 GB in float32 at N = 68
        reports=False,
    ),
    ("fic", "euler"): Integrator("pmfm.sim.fic:integrate_fic", options=("coupling", "target_rate")),
}


def register(circuit: str, method: str, integrator: Integrator) -> None:
    """Add an integrator (a new method, or a circuit's own path) to the registry."""
    INTEGRATORS[circuit, method] = integrator


def triton_available() -> bool:
    """Whether Triton can be imported (it ships with CUDA builds of torch)."""
    return find_spec("triton") is not None


def resolve_method(method: str, device: torch.device, circuit: str = "pmfm") -> str:
    """``auto``: the fused kernel on CUDA when Triton is installed, else the plain Euler path.

    A circuit without the requested method (the FIC model has only ``euler``) runs its Euler path;
    :func:`pmfm.sim.simulate.simulate` logs why.
    """
    if method not in METHODS:
        raise ValueError(f"unknown integration method {method!r}; expected one of {list(METHODS)}")
    if method == "auto":
        method = "fused" if device.type == "cuda" and triton_available() else "euler"
    return method if (circuit, method) in INTEGRATORS else "euler"


def resolve_coupling(coupling: str, device: torch.device) -> str:
    """``auto``: ``matmul`` on CUDA (fast), ``fixed_order`` on the CPU (batch-invariant results)."""
    if coupling == "auto":
        return "matmul" if device.type == "cuda" else "fixed_order"
    if coupling not in COUPLINGS:
        raise ValueError(f"simulator.coupling={coupling!r}; expected auto or one of {list(COUPLINGS)}")
    return coupling
