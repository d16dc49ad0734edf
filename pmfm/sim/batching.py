"""Batch layout that makes CPU results bitwise independent of how a run is batched.

PyTorch's CPU elementwise kernels process a contiguous tensor in SIMD vectors of up to 32 lanes
(two AVX-512 float32 registers per iteration) and finish the remainder with scalar code, whose
transcendental functions and fused multiply-adds round differently; tensors above 32,768 elements
are also split between threads at boundaries that depend on their size. A simulation's numbers
would then depend on its neighbours in the batch. Two rules avoid both:

- every elementwise operand has a multiple of 32 elements (no scalar remainder), and
- at most 32,767 elements (one thread, no split).

The integrator pads each chunk of simulations with copies of its last one (``padded_size``) and
limits chunks to ``cpu_chunk_limit``; the noise generator works in tiles that follow both rules.
On CUDA every element runs the same code, so no padding is needed there.
"""

from __future__ import annotations

import math

LANES = 32  # elements per unrolled SIMD iteration, widest case (AVX-512, float32)
GRAIN = 32_768  # torch's threading grain: smaller tensors run on one thread


def row_multiple(width: int) -> int:
    """Smallest row count m such that m * width is a multiple of LANES."""
    return LANES // math.gcd(width, LANES)


def padded_size(rows: int, width: int) -> int:
    """``rows`` rounded up so that rows * width is a multiple of LANES."""
    m = row_multiple(width)
    return -(-rows // m) * m


def cpu_chunk_limit(width: int) -> int:
    """Most rows of ``width`` elements per chunk that keep one thread and whole vectors."""
    m = row_multiple(width)
    return max(m, (GRAIN - 1) // width // m * m)
