"""The cost: static FC, sliding-window FCD, KS and FC L1, batched on any device (docs/cost.md).

Two stages, so that repeats can be produced in any order and costed later: ``repeat_stats(bold)``
(per repeat: FC upper triangle, FCD CDF, validity) and ``combine_repeats(stats, emp_fc, emp_cdf, R)``
(average each group's valid repeats and cost it). Lower is better.
"""

from pmfm.cost.fcd import cumulative_histogram, fc_matrix, fcd_cdf, fcd_matrix, upper_triangle, window_fc
from pmfm.cost.repeats import (
    CPU_CHUNK,
    Costs,
    RepeatStats,
    combine_repeats,
    cost_bytes_per_sim,
    cost_chunk_size,
    evaluate,
    matmul_precision,
    repeat_stats,
)
from pmfm.cost.targets import average_runs, fisher_mean, mean_cdf, run_stats
from pmfm.cost.variants import DELSSOME, FIC, KONG2021, CostVariant, cost_variant
from pmfm.data.checks import fcd_pair_count

__all__ = [
    "DELSSOME",
    "FIC",
    "KONG2021",
    "CostVariant",
    "Costs",
    "RepeatStats",
    "average_runs",
    "combine_repeats",
    "cost_bytes_per_sim",
    "cost_chunk_size",
    "cost_variant",
    "cumulative_histogram",
    "CPU_CHUNK",
    "evaluate",
    "fc_matrix",
    "fcd_cdf",
    "fcd_matrix",
    "fcd_pair_count",
    "fisher_mean",
    "matmul_precision",
    "mean_cdf",
    "repeat_stats",
    "run_stats",
    "upper_triangle",
    "window_fc",
]
