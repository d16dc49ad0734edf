"""Kong2021's fitting protocol as resumable stages (search, validation, test) and its report."""

from pmfm.fitting.stages import Candidates
from pmfm.fitting.state import RunState, StateError

__all__ = ["Candidates", "RunState", "StateError"]
