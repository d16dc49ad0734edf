"""The simulators: integrators behind one registry, keyed noise, the protocol, ``simulate``.

simulate(theta, space, sc, Simulator(method="euler", dtype="float64"), Noise.independent(seed))
"""

from pmfm.sim.noise import Noise
from pmfm.sim.protocol import SimProtocol
from pmfm.sim.registry import INTEGRATORS, Integrator, register
from pmfm.sim.simulate import SimResult, simulate
from pmfm.sim.simulator import Simulator

__all__ = [
    "INTEGRATORS",
    "Integrator",
    "Noise",
    "SimProtocol",
    "SimResult",
    "Simulator",
    "register",
    "simulate",
]
