#!/usr/bin/env bash
# One call on a lent GPU (about 8 minutes on an H200 at the face config): every case of
# benchmarks/run.py, the authors' execution ("reference") interleaved with scadm's variants, JSON
# and logs under $OUT (default ./bench-out). Stages run under their own time limits, so a stage
# that overruns (compilation) loses only its own numbers; each stage's JSON is written as it ends.
#
#   bash benchmarks/gpu.sh                       # the face config, sized for one 8-minute call
#   CONFIG=toy DEVICE=cpu bash benchmarks/gpu.sh # the dry run on a CPU (a minute or two)
#
# Needs: torch, diffusers, accelerate, tqdm, pyyaml, safetensors (all on the device image);
# PYTHONPATH is set here to the repository's src/ and root.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out}
CONFIG=${CONFIG:-face}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"

GRAPHS=,bf16+graphs
[ "$DEVICE" = cpu ] && GRAPHS=   # CUDA graphs exist only on a GPU
if [ "$CONFIG" = face ]; then
  BIG=64; TRAIN=1,16; STEPS=20,50; REPEATS=5; WARMUP=2; LIMITS=(190 110 170)   # seconds per stage
else  # the dry run: every stage and variant once, quickly
  BIG=2; TRAIN=1; STEPS=2; REPEATS=1; WARMUP=1; LIMITS=(600 600 600)
fi

{ nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>/dev/null || true
  $PY -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"
} > "$OUT/env.txt" 2>&1

run() {  # stage name, time limit, arguments of benchmarks.run
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  timeout --signal=INT "$limit" $PY -m benchmarks.run --config "$CONFIG" --device "$DEVICE" \
    --out "$OUT/$name.json" "$@" > "$OUT/$name.log" 2>&1
  echo "rc=$?"; tail -n 25 "$OUT/$name.log"
}

# 1. inference: UNet step at batch 1 and $BIG (FLOPs, % of the matmul rate, error vs reference),
#    style encoder, VQ decode, whole edits with DDIM and DPM-Solver++ at batch 1; CUDA graphs
run inference "${LIMITS[0]}" --variants reference,fp32,bf16,bf16+cl$GRAPHS --batches 1,$BIG \
  --cases unet,style,vq,edit --samplers ddim,dpm++ --edit-steps $STEPS --edit-batches 1 --repeats $REPEATS --warmup $WARMUP
# 2. training: reference vs bf16 autocast + fused AdamW, images/s
run train "${LIMITS[1]}" --variants reference,bf16 --cases train --train-batches $TRAIN --repeats $REPEATS --warmup $WARMUP
# 3. torch.compile (compilation time stays in the warm-up): UNet step and training
run compile "${LIMITS[2]}" --variants reference,bf16,bf16+compile --batches 1,$BIG --cases unet,train \
  --train-batches 1 --repeats $REPEATS --warmup $WARMUP
ls -l "$OUT"
