"""The seed study's experiments (issue 7), one module each, run by ``python -m pmfm.experiment``.

    sc_insensitivity    assumption 1: costs barely change with the group SC
    smoothness          assumption 2: costs vary smoothly with the parameters
    model_comparison    surrogate networks side by side (pmfm.train multirun + pmfm.compare)
    search_comparison   CMA-ES, Adam and CMA-ES + uncertainty penalty against one surrogate
    parameter_recovery  fit synthetic targets made from known parameters with both strategies
    speedup             time per candidate evaluation and whole-fit wall time, side by side

Each module has ``run(cfg, out_dir) -> dict``: it writes ``results.csv`` (its table), PNG figures
and ``summary.json`` / ``summary.md`` (the conclusion with its numbers) into ``out_dir`` and returns
the summary. Modules are imported only when their study runs (cma, Lightning stay lazy).
"""

STUDIES = (
    "sc_insensitivity",
    "smoothness",
    "model_comparison",
    "search_comparison",
    "parameter_recovery",
    "speedup",
)
