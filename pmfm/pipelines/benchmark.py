"""Throughput of the simulator and the cost: ``python -m pmfm.benchmark``.

Simulates the Kong2021 example sets (tiled to the batch) on the bundled SC and costs random BOLD,
after a warm-up, synchronising the device around each timing, and reports medians over
``--repeats`` timings. With ``--steps N`` only N main steps are timed (no warm-up steps) and the
per-step time is extrapolated to the full protocol's 99,401 steps (1,000 warm-up + 98,401 main;
warm-up steps skip the Balloon, so the extrapolation is slightly pessimistic); methods named in
``--full-methods`` (the fused kernel by default) always run the full protocol. On CUDA the default
compares the plain path, the compiled path and the fused kernel at batch 1,500 and 15,000 side by
side and prints their ratios. Rows are appended to ``--results-file`` (see benchmarks/README.md).
Needs only torch, numpy and scipy (and Triton for the fused kernel).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import functools
import io
import itertools
import os
import statistics
import time
from dataclasses import replace
from math import nan
from pathlib import Path

import numpy as np
import torch

from pmfm.cost import KONG2021, fcd_pair_count, repeat_stats
from pmfm.data import bundled_path, load_bundled
from pmfm.evaluate import evaluate_params
from pmfm.models.networks import LinearisedMLP, build_network
from pmfm.params import ParamSpace, read_params_csv
from pmfm.sim import Noise, SimProtocol, Simulator, simulate

COLUMNS = ("date", "device", "torch", "implementation", "batch", "sims_per_s")
FULL = SimProtocol()  # the reference protocol: 99,401 steps, 1,200 TRs kept
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def device_name(device: torch.device) -> str:
    """GPU name, or the CPU model from /proc/cpuinfo and the cores this process may use."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    model = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), "CPU")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} ({cores} cores)"


def median_time(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    """Median seconds of ``fn()`` over ``repeats`` runs, and peak CUDA memory in MiB (else nan)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else nan
    return statistics.median(times), peak


def run_benchmark(
    batches=(15,),
    methods=("euler",),
    device="auto",
    dtype="float32",
    coupling="auto",
    steps: int | None = None,
    full_methods=("fused",),
    repeats: int | None = None,
    cost_batch: int = 32,
    cost_tr: int = FULL.n_tr,
    cost_precisions=("float32",),
    results_file: str | Path | None = "benchmarks/results.csv",
    surrogates=("mlp", "mlp_lna", "transformer", "gnn", "ensemble"),
    surrogate_batch: int = 10_000,
    evaluate_repeats: int = 0,
) -> list[dict]:
    """Time the simulator (per method and batch size) and the cost; returns one dict per row.

    ``methods`` are integrators, ``fused:<precision>`` for the fused kernel at another coupling
    precision. ``steps=None`` times the full protocol, else ``steps`` main steps, extrapolated,
    except for ``full_methods``. ``repeats`` defaults to 1 for the full protocol and 3 otherwise.
    ``cost_batch=0`` skips the cost; ``cost_precisions`` are float32 and/or tf32.
    ``evaluate_repeats=R > 0`` also times the whole evaluation path (pmfm.evaluate: simulate R
    repeats of each set and cost them) with the first method at the first batch, in simulations/s.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if coupling == "auto":
        coupling = "matmul" if dev.type == "cuda" else "fixed_order"
    if steps is not None and steps < 2:
        raise ValueError(f"--steps must be at least 2, got {steps}")
    data = load_bundled()
    space = ParamSpace(data.basis())
    example = read_params_csv(bundled_path().parent / "kong2021_example.csv", space)  # (5, 10)
    meta = dict(device=device_name(dev), torch=torch.__version__, device_type=dev.type, dtype=dtype)
    meta["date"] = datetime.datetime.now().isoformat(timespec="seconds")
    rows = []
    for spec, batch in itertools.product(methods, batches):
        method, _, precision = spec.partition(":")
        truncated = steps is not None and method not in full_methods
        protocol = _main_steps_only(steps) if steps is not None and truncated else FULL
        theta = example[torch.arange(batch) % len(example)]  # (B, 10), the example sets tiled
        settings = Simulator(method=method, device=str(dev), dtype=dtype, coupling=coupling,
                             precision=precision or "tf32")  # fmt: skip
        noise = Noise.independent(0, torch.arange(batch))
        run = functools.partial(simulate, theta, space, data.sc, replace(settings, protocol=protocol), noise)
        try:
            simulate(
                theta, space, data.sc, replace(settings, protocol=_main_steps_only(100)), noise
            )  # warm-up
            seconds, peak = median_time(run, dev, repeats or (3 if truncated else 1))
        except (RuntimeError, ValueError) as error:  # a path this device cannot run: say so, go on
            print(f"sim {spec} at batch {batch} failed: {error!s:.300}")
            continue
        full_s = seconds / protocol.total_steps * FULL.total_steps
        detail = {"fused": f"{precision or 'tf32'} coupling", "compiled": "matmul"}.get(method, coupling)
        if method == "fused":
            from pmfm.sim.fused import choose_layout  # Triton: only when the kernel is asked for

            detail += f" {choose_layout('auto', batch, dev)} layout"
        name = f"sim {method} {detail} {dtype}" + (f" (extrapolated from {steps} steps)" if truncated else "")
        rows.append(meta | dict(implementation=name, batch=batch, steps=protocol.total_steps,
                                seconds=seconds, full_s=full_s, sims_per_s=batch / full_s,
                                peak_mib=peak, method=spec))  # fmt:skip
    if evaluate_repeats > 0:
        rows.append(meta | _time_evaluation(methods[0], batches[0], evaluate_repeats, steps, full_methods,
                                            dev, dtype, coupling, space, data, example, repeats))  # fmt: skip
    if cost_batch > 0:
        gen = torch.Generator(device=dev).manual_seed(0)
        bold = torch.randn(
            cost_batch, space.n_regions, cost_tr, dtype=DTYPES[dtype], device=dev, generator=gen
        )
        for precision in cost_precisions:
            repeat_stats(bold[:2], precision=precision)  # warm-up
            cost = functools.partial(repeat_stats, bold, precision=precision)
            seconds, peak = median_time(cost, dev, repeats or 3)
            name = f"cost repeat_stats {dtype} {precision} products T={cost_tr}"
            rows.append(meta | dict(implementation=name,
                                    batch=cost_batch, steps=0, seconds=seconds, full_s=seconds,
                                    sims_per_s=cost_batch / seconds, peak_mib=peak))  # fmt:skip
    for name in surrogates:
        rows.append(meta | _time_surrogate(name, surrogate_batch, space, data, dev, repeats or 3))
    if results_file:
        append_results(Path(results_file), rows)
    return rows


def _time_surrogate(name: str, batch: int, space: ParamSpace, data, dev: torch.device, repeats: int) -> dict:
    """Evaluations/s of an (untrained) surrogate network with default hyperparameters, eval mode."""
    target = {"target_fc": data.fc.tolist()} if name == "mlp_lna" else {}
    net = build_network(
        name, n_outputs=3, box=space.box.tolist(), basis=data.basis().tolist(), sc=data.sc.tolist(), **target
    )
    net = net.to(dev).eval()
    if isinstance(net, LinearisedMLP):
        net.memoise = False  # time the linearisation of every set, not a lookup
    u = torch.rand(batch, space.dim, device=dev)
    with torch.no_grad():
        net(u[:16])  # warm-up
        seconds, peak = median_time(functools.partial(net, u), dev, max(repeats, 3))
    return dict(implementation=f"surrogate {name} (untrained, default size)", batch=batch, steps=0,
                seconds=seconds, full_s=seconds, sims_per_s=batch / seconds, peak_mib=peak)  # fmt:skip


def _time_evaluation(spec, sets, r, steps, full_methods, dev, dtype, coupling, space, data, example, repeats):
    """Simulations/s through ``evaluate_params``: ``sets`` example sets x R repeats, simulated and costed."""
    method, _, precision = spec.partition(":")
    truncated = steps is not None and method not in full_methods
    # a truncated run keeps at least one FCD window's TRs, so that the cost has something to cost
    shortest = (KONG2021.window + 1) * FULL.tr_steps
    protocol = _main_steps_only(max(steps, shortest)) if truncated else FULL
    settings = Simulator(protocol=protocol, method=method, device=str(dev), dtype=dtype, coupling=coupling,
                         precision=precision or "tf32")  # fmt: skip
    theta = example[torch.arange(sets) % len(example)]
    evaluate = functools.partial(
        evaluate_params, theta, space, _as_split(data, protocol), settings, repeats=r
    )
    evaluate_params(theta[:1], space, _as_split(data, protocol), settings, repeats=1)  # warm-up
    seconds, peak = median_time(evaluate, dev, repeats or (3 if truncated else 1))
    full_s = seconds / protocol.total_steps * FULL.total_steps if truncated else seconds
    name = f"evaluate sim {method} + cost, R = {r}, {dtype}" + (
        f" (extrapolated from {protocol.total_steps} steps)" if truncated else ""
    )
    return dict(implementation=name, batch=sets, steps=protocol.total_steps, seconds=seconds, full_s=full_s,
                sims_per_s=sets * r / full_s, peak_mib=peak, method=spec)  # fmt: skip


def _as_split(data, protocol: SimProtocol):
    """The data with its FCD CDF rescaled to the protocol's TRs (timing only: costs are not compared)."""
    pairs = fcd_pair_count(protocol.n_tr, KONG2021.window)
    cdf = np.rint(np.asarray(data.fcd_cdf, dtype=np.float64) / data.fcd_cdf[-1] * pairs).astype(np.int64)
    return replace(data, fcd_cdf=cdf)


def _main_steps_only(steps: int) -> SimProtocol:
    """The reference dt and TR, no warm-up, exactly ``steps`` main steps (at least one TR kept)."""
    return SimProtocol(warmup_steps=0, duration_s=(steps - 1) * FULL.dt, burn_in_samples=0)


def append_results(path: Path, rows: list[dict]) -> None:
    """Append rows to the CSV (with the header when the file is new) in a single write."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, extrasaction="ignore", lineterminator="\n")
    if not path.is_file() or path.stat().st_size == 0:
        writer.writeheader()
    writer.writerows(row | {"sims_per_s": f"{row['sims_per_s']:.4g}"} for row in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(buffer.getvalue())


def format_table(rows: list[dict]) -> str:
    """The rows as a fixed-width text table."""
    head = "device|dtype|batch|steps|seconds|ms/step|full s|sims/s|peak MiB".split("|")
    if not rows:
        return "no rows"
    lines = [f"{rows[0]['device']}, torch {rows[0]['torch']}, {torch.get_num_threads()} threads"]
    lines.append(f"{'implementation':<52}" + "".join(f"{h:>9}" for h in head))
    for r in rows:
        ms = f"{1e3 * r['seconds'] / r['steps']:.3f}" if r["steps"] else "-"
        cells = (r["device_type"], r["dtype"], r["batch"], r["steps"] or "-",
                 f"{r['seconds']:.3f}", ms, f"{r['full_s']:.2f}", f"{r['sims_per_s']:.4g}",
                 f"{r['peak_mib']:.0f}")  # fmt:skip
        lines.append(f"{r['implementation']:<52}" + "".join(f"{c:>9}" for c in cells))
    return "\n".join(lines)


def format_ratios(rows: list[dict]) -> str:
    """Each simulator row's speed against the plain path (first method) at the same batch."""
    sims = [r for r in rows if r["implementation"].startswith("sim")]
    lines = []
    for batch in dict.fromkeys(r["batch"] for r in sims):
        at = [r for r in sims if r["batch"] == batch]
        base = at[0]
        for r in at[1:]:
            lines.append(f"batch {batch}: {r['method']} / {base['method']} = "
                         f"{r['sims_per_s'] / base['sims_per_s']:.1f}x ({r['sims_per_s']:.4g} vs "
                         f"{base['sims_per_s']:.4g} sims/s)")  # fmt:skip
        if len(at) > 2:  # the fastest against the second fastest
            first, second = sorted(at, key=lambda r: -r["sims_per_s"])[:2]
            lines.append(f"batch {batch}: {first['method']} / {second['method']} = "
                         f"{first['sims_per_s'] / second['sims_per_s']:.1f}x")  # fmt:skip
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    """Parse arguments, run the benchmark, print the table."""
    p = argparse.ArgumentParser(prog="python -m pmfm.benchmark", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch", dest="batches", help="comma list; default 15 (CPU), 1500,15000 (CUDA)")
    p.add_argument(
        "--methods",
        help="comma list of euler, torchdiffeq, compiled, fused, fused:<tf32|tf32x3|ieee>; "
        "default euler (CPU), euler,compiled,fused (CUDA)",
    )
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--coupling", default="auto", choices=("auto", "fixed_order", "matmul"))
    p.add_argument(
        "--steps", type=int, default=None, help="time N main steps and extrapolate (default on CUDA: 2000)"
    )
    p.add_argument("--full-methods", default="fused", help="methods always timed on the full protocol")
    p.add_argument("--repeats", type=int, default=None, help="timings per median (1 full, else 3)")
    p.add_argument("--cost-batch", type=int, default=None, help="default 32 on CPU, 4096 on CUDA")
    p.add_argument(
        "--cost-precisions", help="comma list of float32, tf32; default float32 (CPU), both (CUDA)"
    )
    p.add_argument("--cost-tr", type=int, default=FULL.n_tr, help="TRs of the random BOLD")
    p.add_argument("--results-file", default="benchmarks/results.csv", help="'' to skip")
    p.add_argument(
        "--surrogates", default="mlp,mlp_lna,transformer,gnn,ensemble", help="networks to time; '' to skip"
    )
    p.add_argument("--surrogate-batch", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--evaluate-repeats", type=int, default=1,
        help="R of the whole evaluation path (simulate + cost) timed at the first method and batch; 0 skips",
    )  # fmt: skip
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    del a.threads
    cuda = a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if not cuda and load > 0.5:
        print(f"note: load average {load:.1f} before the run; CPU timings may be contended")
    a.batches = [int(b) for b in (a.batches or ("1500,15000" if cuda else "15")).split(",")]
    a.methods = (a.methods or ("euler,compiled,fused" if cuda else "euler")).split(",")
    a.full_methods = a.full_methods.split(",")
    a.steps = a.steps if a.steps is not None or not cuda else 2000
    a.surrogates = [n for n in a.surrogates.split(",") if n]
    a.cost_batch = a.cost_batch if a.cost_batch is not None else (4096 if cuda else 32)
    a.cost_precisions = (a.cost_precisions or ("float32,tf32" if cuda else "float32")).split(",")
    rows = run_benchmark(**vars(a))
    print(format_table(rows))
    print(format_ratios(rows))
    cost = [r for r in rows if r["implementation"].startswith("cost")]
    for r in rows if cost else []:
        if r["implementation"].startswith("sim"):
            both = 1 / (1 / r["sims_per_s"] + 1 / cost[0]["sims_per_s"])
            print(f"simulate + cost at batch {r['batch']}: {both:.3f} sims/s (what dataset generation should "
                  f"reach: its summary prints its own simulations/s)")  # fmt:skip
    if a.steps is not None:
        print(f"simulator rows: {a.steps} steps timed, 'full s' and sims/s extrapolated to "
              f"the full protocol's {FULL.total_steps:,} steps")  # fmt:skip
    return rows


if __name__ == "__main__":
    main()
