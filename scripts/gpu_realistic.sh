#!/usr/bin/env bash
# One call on a lent GPU machine (torch, no OpenVINO, no network): the carried realistic faces in
# the folder layout, then the first stage and the diffusion model in bf16, weights + logs into
# $OUT. See scripts/gpu_realistic.py and the README ("Realistic model on one GPU call").
#
#   here, once:  python scripts/gpu_realistic.py pack --data data/stylegan-faces --wheels   # -> .gpu/
#   there:       OUT=$OUT scripts/gpu_realistic.sh              (the call carries .gpu)
#   CPU check:   OUT=/tmp/toy scripts/gpu_realistic.sh --toy    (after pack: 4 faces, 2 steps per stage)
#
# Non-commercial: the faces derive from StyleGAN2-FFHQ / FFHQ, the masks from CelebAMask-HQ.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if ! "$py" -c "import diffusers" 2>/dev/null; then
    if ! compgen -G ".gpu/wheels/*.whl" >/dev/null; then
        echo "gpu_realistic: no diffusers here and no .gpu/wheels/*.whl: here, pack with --wheels, then carry .gpu" >&2
        exit 1
    fi
    "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
exec "$py" scripts/gpu_realistic.py run --out "${OUT:?set OUT to the folder that comes back}" "$@"
