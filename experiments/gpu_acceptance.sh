#!/usr/bin/env bash
# The GPU-scale acceptance pair, in one go on a bare GPU machine (torch, Triton, Lightning there; Hydra,
# omegaconf and cma carried in $SITE). Every step is logged under $OUT and bounded by a timeout; a
# failed step does not stop the later ones that do not need it.
#   1. the surrogates' evaluation speed on this GPU (benchmark rows)
#   2. the baseline fit: experiment=fit/accept_simulator_gpu (60,000 training simulations)
#   3. the fast path: experiment=fit/accept_surrogate_gpu (the MLP on the shipped dataset, CMA-ES
#      pre-screened by it; other budgets: append strategy.simulate_top=... strategy.cmaes.max_generations=...)
#   4. the noise ceiling of dataset=hcp_cmaes_gpu (generated here unless already in $DATASETS, 19 s on
#      an H100): every row re-simulated with fresh noise (study=surrogate_ceiling)
#   5. the acceptance check: both chosen sets re-simulated with fresh noise, R = 20, 5 groups
#      (study=fit_acceptance)
# Usage: OUT=<logs> SITE=<carried packages> bash experiments/gpu_acceptance.sh
#   EXTRA, SIM_EXTRA, SUR_EXTRA (overrides for both fits, the baseline, the fast path) and DATASETS
#   (paths.datasets) shrink it for a dry run on the CPU; the GPU-only steps are skipped then.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${SITE:+:$SITE} TRITON_DEFAULT_FP_FUSION=1
export CUBLAS_WORKSPACE_CONFIG=:4096:8 WANDB_MODE=offline
OUT=${OUT:-outputs/gpu_acceptance}
DATASETS=${DATASETS:-outputs/datasets}
RUNS=${RUNS:-outputs/fit}
SKIP_BENCH=${SKIP_BENCH:-} EXTRA=${EXTRA:-} SIM_EXTRA=${SIM_EXTRA:-} SUR_EXTRA=${SUR_EXTRA:-}
GPU_DATASET=$DATASETS/hcp_cmaes_gpu_pmfm_1200tr_r3   # dataset=hcp_cmaes_gpu's folder under paths.datasets
mkdir -p "$OUT"
step() { local name=$1 limit=$2; shift 2; echo "== $name ($(date +%T))"; timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1;
         echo "   exit $? after ${SECONDS}s"; tail -n 25 "$OUT/$name.txt"; }

nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null
[ -z "$EXTRA$SKIP_BENCH" ] && step benchmark 45 python3 -m pmfm.benchmark --methods fused --batch 1500 --steps 200 \
  --cost-batch 0 --results-file benchmarks/results.csv
# shellcheck disable=SC2086
step fit_simulator 130 python3 -m pmfm.fit experiment=fit/accept_simulator_gpu \
  hydra.run.dir="$RUNS/accept_simulator_gpu" paths.datasets="$DATASETS" $EXTRA $SIM_EXTRA
# shellcheck disable=SC2086
step fit_surrogate 150 python3 -m pmfm.fit experiment=fit/accept_surrogate_gpu \
  hydra.run.dir="$RUNS/accept_surrogate_gpu" paths.datasets="$DATASETS" compare_to="$RUNS/accept_simulator_gpu" \
  $EXTRA $SUR_EXTRA
[ -z "$EXTRA" ] && [ ! -f "$GPU_DATASET/manifest.json" ] && step generate 60 python3 -m pmfm.generate \
  dataset=hcp_cmaes_gpu paths.datasets="$DATASETS"
[ -z "$EXTRA" ] && step ceiling 60 python3 -m pmfm.experiment study=surrogate_ceiling study.dataset="$GPU_DATASET" \
  study.resimulate_all="$OUT/hcp_cmaes_gpu_fresh.npz" hydra.run.dir="$RUNS/ceiling_gpu"
SURROGATE_RUNS=$(ls -d "$RUNS"/accept_surrogate*_gpu 2>/dev/null | paste -sd, -)
[ -z "$EXTRA" ] && step acceptance 60 python3 -m pmfm.experiment study=fit_acceptance \
  study.simulator_run="$RUNS/accept_simulator_gpu" "study.surrogate_runs=[$SURROGATE_RUNS]" \
  study.out="$OUT/fit_acceptance_gpu.json" hydra.run.dir="$RUNS/acceptance_gpu"
cp benchmarks/results.csv "$OUT/results.csv" 2>/dev/null
tar czf "$OUT/runs.tar.gz" --exclude='*.ckpt.tmp' "$RUNS"/accept_*_gpu "$GPU_DATASET" 2>/dev/null
(cd "$OUT" && tar czf logs.tar.gz ./*.txt && rm ./*.txt)  # the device returns at most 8 files
ls -la "$OUT"
