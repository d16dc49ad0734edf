"""One progress display for every long stage: a tqdm bar on a terminal, silent elsewhere."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int | None, desc: str, unit: str = "sim", enabled: bool = True) -> tqdm:
    """A bar of ``total`` ``unit``s; off under ``progress=false`` and when stderr is not a terminal.

    Use as a context manager; ``bar.update(n)`` fits the ``progress`` callbacks of the library
    (n may be a fraction: the plain integrators report their share of a run as they go).
    """
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not (enabled and sys.stderr.isatty()),
        smoothing=0.05,
        bar_format="{l_bar}{bar}| {n:.3g}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]",
    )
