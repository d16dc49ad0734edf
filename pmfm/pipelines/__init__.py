"""Whole jobs as library functions: simulate sets, make a dataset, train a surrogate, predict, fit,
benchmark, compare runs. They take composed configs and never call an entry point; the entry
points (``pmfm.simulate``, ``pmfm.generate``, ...) are thin wrappers around them."""
