"""Launch settings of the fused kernel: layout x block x warps x coupling precision, truncated run.

    python benchmarks/tune_fused.py [--steps 2000] [--batch 15000,1500]

Times ``pmfm.sim.fused.integrate_fused`` for each setting on ``--steps`` main steps (median of 3,
after a compiling warm-up) and prints simulations/s extrapolated to the full 99,401-step protocol,
fastest first. The defaults in pmfm/sim/fused.py come from this table (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import functools
import itertools

import torch

from pmfm.benchmark import median_time
from pmfm.data import bundled_path, load_bundled
from pmfm.params import ParamSpace, read_params_csv
from pmfm.sim import Noise, SimProtocol, dynamics
from pmfm.sim.fused import PRECISIONS, integrate_fused

FULL_STEPS = SimProtocol().total_steps


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", default="15000,1500")
    p.add_argument("--layouts", default="split,wide")
    p.add_argument("--blocks", default="16,32,64")
    p.add_argument("--warps", default="4,8")
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    a = p.parse_args(argv)
    data = load_bundled()
    space = ParamSpace(data.basis())
    example = read_params_csv(bundled_path().parent / "kong2021_example.csv", space)
    c = dynamics.coupling_matrix(torch.as_tensor(data.sc, dtype=torch.float64)).float().cuda()
    protocol = SimProtocol(warmup_steps=0, duration_s=(a.steps - 1) * 0.01, burn_in_samples=0)
    print(f"{torch.cuda.get_device_name()}: {a.steps} main steps timed, extrapolated to {FULL_STEPS:,}")
    results = []
    for batch in map(int, a.batch.split(",")):
        params = space.regional(example[torch.arange(batch) % 5]).to(device="cuda", dtype=torch.float32)
        noise = Noise.independent(0, torch.arange(batch))
        for layout, block, warps, precision in itertools.product(
            a.layouts.split(","), map(int, a.blocks.split(",")), map(int, a.warps.split(",")),
            a.precisions.split(","),
        ):  # fmt: skip
            run = functools.partial(
                integrate_fused, params, c, protocol, noise,
                precision=precision, layout=layout, block=block, num_warps=warps,
            )  # fmt: skip
            try:
                run()  # compile
                seconds, _ = median_time(run, torch.device("cuda"), 3)
            except Exception as error:  # a setting the compiler or the device refuses
                print(f"batch {batch} {layout} {block} x {warps} warps {precision}: failed ({error!s:.200})")
                continue
            rate = batch / (seconds / protocol.total_steps * FULL_STEPS)
            results.append((batch, rate, f"{layout} {block}", warps, precision, seconds))
            print(f"batch {batch:>6} {layout:>5} block {block:>3} warps {warps} {precision:>6}: "
                  f"{1e6 * seconds / protocol.total_steps:8.2f} us/step  {rate:9.1f} sims/s")  # fmt: skip
    print("\nfastest first:")
    for batch, rate, block, warps, precision, _ in sorted(results, key=lambda r: (r[0], -r[1])):
        print(f"batch {batch:>6} {block:>9} warps {warps} {precision:>6}: {rate:9.1f} sims/s")


if __name__ == "__main__":
    main()
