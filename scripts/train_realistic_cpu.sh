#!/usr/bin/env bash
# The recipe of the shipped realistic model (src/scadm/assets/realistic-64, `--model realistic`) with
# scadm's own commands and configs/realistic-64-cpu.yaml, on a CPU. Step counts are those the shipped
# run reached (it was time-boxed with --max-minutes; MODEL_CARD.md gives times and hardware).
# Both stages start from the shipped demo model's weights (same architecture): the first stage
# re-learns realistic textures, the UNet and style encoder keep their binding of class styles to
# regions and re-learn colours. NON-COMMERCIAL: the faces derive from StyleGAN2-FFHQ / FFHQ, the
# masks from BiSeNet trained on CelebAMask-HQ; so does the model.
#
#   scripts/train_realistic_cpu.sh DATA RUNS_DIR
#
# DATA: the 64 px folder of `scadm prepare stylegan-faces --num N --size 64 OUT` (OUT/64px), with
# N >= 2,211 (faces 0..2210 hold the 2,100 training faces the diffusion stage used; the held-out
# faces are the test/ split). The shipped run pinned each stage to one core (taskset -c 0,
# OMP_NUM_THREADS=1) while other work used the second.
set -euo pipefail
data=${1:?usage: $0 DATA RUNS_DIR}
runs=${2:?usage: $0 DATA RUNS_DIR}
config=configs/realistic-64-cpu.yaml
demo=src/scadm/assets/demo-procedural-64
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$runs"

# 1. first stage: the demo model's VQ fine-tuned for 725 steps at batch 16 on the first 1,600
#    training faces (35 min on one core, bf16 autocast); held-out PSNR 26.9 dB at step 200, 27.5 at 725
scadm train-vq "$config" --out "$runs/vq" --init "$demo" --set data.root="$data" \
    --set data.limit=1600 --max-steps 725

# 2. SCA-DM: the demo model's UNet and style encoder fine-tuned at batch 32 on the first 2,100
#    training faces, v-prediction, EMA 0.999 (78 min on one core, bf16 autocast; held-out PSNR
#    17.3 dB at step 1,000, 18.3 at 4,000)
scadm train "$config" --out "$runs/dm" --vq "$runs/vq" --init "$demo" --set data.root="$data" \
    --set data.limit=2100 --max-steps 4250

# 3. fp16 weights, its first stage included, into the package
python - "$runs/dm/pipeline" src/scadm/assets/realistic-64 <<'PY'
import sys

import torch

from scadm.pipeline import SCADMPipeline

SCADMPipeline.from_pretrained(sys.argv[1]).to(dtype=torch.float16).save_pretrained(sys.argv[2])
print(f"wrote {sys.argv[2]} (fp16)")
PY
