#!/usr/bin/env bash
# Regenerate the reports on a CPU (small N): reports/procedural for the shipped demo model, and
# reports/ablation for the mask-attention ablation pair (reports/models: one recipe, trained with
# and without mask-conditioned attention). Renders are cached (~/.cache/scadm/evaluate), so an
# interrupted run resumes where it stopped.
# Usage: reports/procedural/regenerate.sh   [env: SCADM, PARSER]
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # two threads on a busy 2-core machine are many times slower
cd "$(dirname "$0")/../.."
SCADM=${SCADM:-.venv/bin/scadm}
PARSER=${PARSER:-procedural}
COMMON=(--parser "$PARSER" --steps 25 --no-progress)
SHIPPED=(--model src/scadm/assets/demo-procedural-64 --out reports/procedural "${COMMON[@]}")
PAIR=(--model reports/models/mask-attention --model reports/models/no-mask-attention --out reports/ablation
      "${COMMON[@]}")

"$SCADM" evaluate --protocol reconstruction --protocol swap --protocol partial-swap --num 32 "${SHIPPED[@]}"
"$SCADM" evaluate --protocol disentanglement --num 16 --axis-steps 10,25,50 --axis-guidance 1,1.2,2 "${SHIPPED[@]}"
"$SCADM" evaluate --protocol noise --num 16 --noise-steps 50,100,200,1000 --diversity-masks 8 \
    --diversity-samples 4 "${SHIPPED[@]}"
"$SCADM" evaluate --protocol timing --num 4 --batch 4 --timing-steps 10,25,50 --timing-repeats 3 "${SHIPPED[@]}"
"$SCADM" evaluate --protocol reconstruction --protocol partial-swap --protocol disentanglement --num 16 \
    --axis-steps 25 --axis-guidance 1,1.2,2 --no-fid "${PAIR[@]}"
