#!/usr/bin/env bash
# One call on a lent GPU (about 9 minutes on an H200 at the face config): every case of
# benchmarks/run.py, the authors' execution ("reference") interleaved with scadm's variants, JSON
# and logs under $OUT (default ./bench-out). Stages run under their own time limits, so a stage
# that overruns (compilation) loses only its own numbers; each stage's JSON is written as it ends.
#
#   bash benchmarks/gpu.sh                       # the face config, sized for one 9-minute call
#   CONFIG=toy DEVICE=cpu bash benchmarks/gpu.sh # the dry run on a CPU (minutes; compiling dominates)
#
# Needs torch, diffusers, accelerate, tqdm, pyyaml, safetensors. The lent H200's image has all but
# diffusers and importlib_metadata (device README: carry them as wheels). Before the call, here:
#   echo /.whl/ >> .git/info/exclude
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 importlib_metadata
# then call the device tool with carry [".whl"]; this script installs them to /tmp/site. The call
# then sends ~50 MiB of its 64 MiB limit (44.2 MiB of repository files, 6.1 MiB of wheels; 2026-11-30).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out}
CONFIG=${CONFIG:-face}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
$PY -c "import diffusers" || { echo "diffusers missing: carry it as a wheel (see the top of this script)"; exit 1; }

GRAPHS=,bf16+graphs
[ "$DEVICE" = cpu ] && GRAPHS=   # CUDA graphs exist only on a GPU
if [ "$CONFIG" = face ]; then
  BIG=64; TRAIN=1,16; STEPS=20,50; REPEATS=5; WARMUP=2; LIMITS=(190 110 140 90)   # seconds per stage
else  # the dry run: every stage and variant once, quickly
  BIG=2; TRAIN=1; STEPS=2; REPEATS=1; WARMUP=1; LIMITS=(600 600 600 600)
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

# 0. CUDA graphs (SCADMPipeline.enable_cuda_graphs) against the eager path: the same edits, equal
#    renders, graph reuse, eager vs graphed edit time (DDIM, DPM-Solver++, UniPC at 20 steps)
if [ "$DEVICE" != cpu ]; then
  echo "== graphs (limit ${LIMITS[3]}s)"
  timeout --signal=INT "${LIMITS[3]}" $PY -m benchmarks.cuda_graphs --config "$CONFIG" --device "$DEVICE" \
    --repeats 3 --out "$OUT/graphs.json" > "$OUT/graphs.log" 2>&1
  echo "rc=$?"; tail -n 8 "$OUT/graphs.log"
fi
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
