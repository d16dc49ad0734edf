"""The pMFM simulator: dynamics, Balloon-Windkessel, integrators, keyed noise, ``simulate``."""

from pmfm.sim.dynamics import coupling_matrix
from pmfm.sim.noise import Noise
from pmfm.sim.protocol import SimProtocol
from pmfm.sim.simulate import INTEGRATORS, SimResult, simulate

__all__ = ["INTEGRATORS", "Noise", "SimProtocol", "SimResult", "coupling_matrix", "simulate"]
