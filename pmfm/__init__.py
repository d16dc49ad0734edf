"""pmfm: fit the parametric mean-field model (Kong et al. 2021) fast."""

__version__ = "0.1.0"
