#!/usr/bin/env bash
# The device check of the GPU paths, in one go (needs only torch, Triton, numpy
# and scipy: no Hydra or wandb): kernel launch settings, the benchmark, then the gpu-marked tests.
# Usage: OUT=<folder for logs> bash benchmarks/gpu_check.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD TRITON_DEFAULT_FP_FUSION=1
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,memory.used --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
timeout 60 python3 benchmarks/tune_fused.py --steps 1000 --batch 15000 --blocks 16 --warps 8,16 \
  --precisions tf32x3,tf32 2>&1 | grep -v -i warn | tee "$OUT/tune.txt"
timeout 150 python3 -m pmfm.benchmark --batch 1500,15000 --methods euler,compiled,fused,fused:tf32 --steps 1000 \
  --results-file benchmarks/results.csv 2>&1 | grep -v -i warn | tee "$OUT/benchmark.txt"
cp benchmarks/results.csv "$OUT/results.csv"
timeout 150 python3 -m pytest -m gpu -q -s -p no:cacheprovider tests/test_fused.py tests/test_cost.py 2>&1 \
  | grep -v -i warn | tee "$OUT/gpu_tests.txt"
