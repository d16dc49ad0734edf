#!/usr/bin/env bash
# The amortised fit's acceptance at GPU scale, in one go on a bare GPU machine (torch, Triton, Lightning
# there; Hydra, omegaconf and cma carried in $SITE). Every step is logged under $OUT, timed and bounded.
#   1. targets: N synthetic subjects (seed 1) + the bundled HCP group; a subset (the group + 4 subjects)
#   2. the bank: dataset=bank_gpu (10,000 Sobol + 10,000 starts + 80 CMA-ES runs against 40 subjects of its own seed)
#   3. strategy=amortised on all N + 1 targets (emulator trained in the run, counted in its wall time)
#   4. the simulator strategy on the subset, batched, at the GPU acceptance budget (60,000 a target)
#   5. the amortised run again with compare_to: every stage found on disk, the side-by-side table
# Usage: OUT=<logs> SITE=<carried packages> bash experiments/gpu_amortised.sh
#   A CPU dry run shrinks every step (the command in experiments/README.md, "One bank, many targets"):
#   N=2 HCP=0 SLOWER=20 EXTRA=protocol=short TARGETS_EXTRA=... BANK_EXTRA=... FIT_EXTRA=... SIM_EXTRA=...
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${SITE:+:$SITE} TRITON_DEFAULT_FP_FUSION=1
export CUBLAS_WORKSPACE_CONFIG=:4096:8 WANDB_MODE=offline
OUT=${OUT:-outputs/gpu_amortised}
WORK=${WORK:-outputs/gpu_amortised_work}
N=${N:-50} HCP=${HCP:-1} BANK=${BANK:-bank_gpu}
EXTRA=${EXTRA:-} TARGETS_EXTRA=${TARGETS_EXTRA:-} BANK_EXTRA=${BANK_EXTRA:-} FIT_EXTRA=${FIT_EXTRA:-}
SIM_EXTRA=${SIM_EXTRA:-} SLOWER=${SLOWER:-1}  # SLOWER: time limits x this (a CPU dry run)
TARGETS=$WORK/targets RUNS=$WORK/fit DATASETS=$WORK/datasets
mkdir -p "$OUT" "$TARGETS/subset"
step() { local name=$1 limit=$2; shift 2; local start=$SECONDS; echo "== $name ($(date +%T))"
         timeout $((limit * SLOWER)) "$@" >"$OUT/$name.txt" 2>&1; local rc=$?
         echo "$name,$rc,$((SECONDS - start))" >>"$OUT/steps.csv"; echo "   exit $rc after $((SECONDS - start)) s"
         tail -n 20 "$OUT/$name.txt"; }

nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null
echo "step,exit,wall_s" >"$OUT/steps.csv"
# shellcheck disable=SC2086
step targets 90 python3 -m pmfm.targets synthetic="$N" seed=1 out="$TARGETS/all" overwrite=true $EXTRA $TARGETS_EXTRA
if [ "$HCP" = 1 ]; then  # the bundled group (a data folder, train and vali splits) as a target
  rm -rf "$TARGETS/all/hcp_group" && cp -r pmfm/data/bundled/hcp_desikan68 "$TARGETS/all/hcp_group"
fi
ALL=$(cd "$TARGETS/all" && pwd)
for name in hcp_group synthetic_000 synthetic_001 synthetic_002 synthetic_003; do
  [ -d "$ALL/$name" ] && ln -sfn "$ALL/$name" "$TARGETS/subset/$name"
done
# shellcheck disable=SC2086
step bank 150 python3 -m pmfm.generate dataset="$BANK" paths.datasets="$DATASETS" progress=false $EXTRA $BANK_EXTRA
AMORTISED=(python3 -m pmfm.fit strategy=amortised dataset="$BANK" paths.datasets="$DATASETS"
           targets.path="$TARGETS/all" strategy.train_epochs=60 strategy.train_batch_size=2048
           hydra.run.dir="$RUNS/amortised" progress=false)
# shellcheck disable=SC2086
step amortised 150 "${AMORTISED[@]}" $EXTRA $FIT_EXTRA
# shellcheck disable=SC2086
step simulator 150 python3 -m pmfm.fit experiment=fit/accept_simulator_gpu targets.path="$TARGETS/subset" \
  hydra.run.dir="$RUNS/simulator" progress=false $EXTRA $SIM_EXTRA
# shellcheck disable=SC2086
step compare 60 "${AMORTISED[@]}" compare_to="$RUNS/simulator" $EXTRA $FIT_EXTRA
tar czf "$OUT/runs.tar.gz" --exclude='*.ckpt' --exclude='state' "$RUNS" 2>/dev/null
(cd "$OUT" && tar czf logs.tar.gz ./*.txt && rm ./*.txt)  # the device returns at most 8 files
cat "$OUT/steps.csv"
ls -la "$OUT"
