#!/usr/bin/env bash
# Issues 4 and 5 at GPU scale, in one go on a bare GPU machine (torch, Triton, Lightning there; Hydra,
# omegaconf and cma carried in $SITE). Every step is logged under $OUT and bounded by a timeout; a
# failed step does not stop the later ones that do not need it.
#   1. the surrogates' evaluation speed on this GPU (benchmark rows, mlp_lna included)
#   2. the baseline fit: experiment=fit_accept_simulator_gpu (60,000 training simulations)
#   3. the fast path: experiment=fit_accept_surrogate_gpu (mlp_lna on the shipped dataset, CMA-ES
#      pre-screened by it; other budgets: append search.simulate_top=... search.max_generations=...)
#   4. the noise ceiling of dataset=hcp_cmaes_gpu (generated here unless carried in $ROOT, 19 s on an
#      H100): every row re-simulated with fresh noise
#   5. issue 5's check: both chosen sets re-simulated with fresh noise (R = 20, 5 groups)
# Usage: OUT=<logs> SITE=<carried packages> bash experiments/gpu_acceptance.sh
#   EXTRA, SIM_EXTRA, SUR_EXTRA (overrides for both fits, the baseline, the fast path) and ROOT
#   (datasets folder) shrink it for a dry run on the CPU; the GPU-only steps are skipped then.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${SITE:+:$SITE} TRITON_DEFAULT_FP_FUSION=1
export CUBLAS_WORKSPACE_CONFIG=:4096:8 WANDB_MODE=offline
OUT=${OUT:-/tmp/gpu_acceptance}
ROOT=${ROOT:-outputs/datasets}
RUNS=${RUNS:-outputs/fit}
SKIP_BENCH=${SKIP_BENCH:-} EXTRA=${EXTRA:-} SIM_EXTRA=${SIM_EXTRA:-} SUR_EXTRA=${SUR_EXTRA:-}
mkdir -p "$OUT"
step() { local name=$1 limit=$2; shift 2; echo "== $name ($(date +%T))"; timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1;
         echo "   exit $? after ${SECONDS}s"; tail -n 25 "$OUT/$name.txt"; }

nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null
[ -z "$EXTRA$SKIP_BENCH" ] && step benchmark 45 python3 -m pmfm.benchmark --methods fused --batch 1500 --steps 200 \
  --cost-batch 0 --results-file benchmarks/results.csv
# shellcheck disable=SC2086
step fit_simulator 130 python3 -m pmfm.fit experiment=fit_accept_simulator_gpu \
  hydra.run.dir="$RUNS/accept_simulator_gpu" root="$ROOT" $EXTRA $SIM_EXTRA
# shellcheck disable=SC2086
step fit_surrogate 150 python3 -m pmfm.fit experiment=fit_accept_surrogate_gpu \
  hydra.run.dir="$RUNS/accept_surrogate_gpu" root="$ROOT" compare_to="$RUNS/accept_simulator_gpu" $EXTRA $SUR_EXTRA
[ -z "$EXTRA" ] && [ ! -d "$ROOT/hcp_cmaes_gpu" ] && step generate 60 python3 -m pmfm.generate \
  dataset=hcp_cmaes_gpu root="$ROOT"
[ -z "$EXTRA" ] && step ceiling 60 python3 experiments/surrogate_ceiling.py --dataset "$ROOT/hcp_cmaes_gpu" \
  --resimulate-all "$OUT/hcp_cmaes_gpu_fresh.npz" --device auto
[ -z "$EXTRA" ] && step acceptance 60 python3 experiments/fit_acceptance.py --device auto --method auto \
  --simulator "$RUNS/accept_simulator_gpu" --surrogate "$RUNS"/accept_surrogate*_gpu \
  --out "$OUT/fit_acceptance_gpu.json"
cp benchmarks/results.csv "$OUT/results.csv" 2>/dev/null
tar czf "$OUT/runs.tar.gz" --exclude='*.ckpt.tmp' "$RUNS"/accept_*_gpu "$ROOT/hcp_cmaes_gpu" 2>/dev/null
(cd "$OUT" && tar czf logs.tar.gz ./*.txt && rm ./*.txt)  # the device returns at most 8 files
ls -la "$OUT"
