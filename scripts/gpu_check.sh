#!/usr/bin/env bash
# The checks that need a CUDA GPU: the CUDA tests (agreement with the CPU, exactness on the
# GPU, the apps and the command), the demo on the GPU, and the app and sampler benchmarks
# with --device cuda (the app benchmark also at a GPU-sized batch: 64 chains of 224 px), and
# a short style-network training on the GPU (its seconds per step are in run.json).
# Every step runs even if one before it fails; the logs go to OUT_DIR.
# Usage: scripts/gpu_check.sh [OUT_DIR]      (python3 must import langevin_images and torch)
#        QUICK=1 scripts/gpu_check.sh ...    (no demo, quick benchmarks: about a minute less)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/gpu}
quick=()
[ "${QUICK:-0}" = 1 ] && quick=(--quick)
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
$py -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))' \
    | tee "$out/device.log"
$py - <<'EOF' 2>&1 | tee "$out/tf32.log"
import torch
from langevin_images.energies import ClassLikelihood
from langevin_images.models import load_model
from langevin_images.samplers.kernel import energy_and_grad
x = torch.rand((4, 3, 64, 64), generator=torch.Generator().manual_seed(2))
model = load_model("lite0")
_, ref = energy_and_grad(ClassLikelihood(model.double(), [1, 207, 400, 980]), x.double())
model = model.float().cuda()
for tf32 in (True, False):
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=tf32):
        _, g = energy_and_grad(ClassLikelihood(model, [1, 207, 400, 980]), x.cuda())
    err = float((g.double().cpu() - ref).abs().max() / ref.abs().max())
    print(f"lite0 gradient on the GPU, cuDNN TF32 {'on ' if tf32 else 'off'}: max error "
          f"{err:.1e} of the largest entry (against float64 on the CPU)")
EOF
$py -m pytest -q -p no:cacheprovider -o addopts="-ra" tests/test_cuda.py 2>&1 | tee "$out/cuda_tests.log"
if [ ${#quick[@]} -eq 0 ]; then
    $py -m langevin_images.cli demo --device cuda --quiet --force --out "${TMPDIR:-/tmp}/demo_cuda" 2>&1 \
        | tee "$out/demo_cuda.log"
fi
$py benchmarks/bench_apps.py "${quick[@]}" --device cuda --json "$out/apps_cuda.json" 2>&1 | tee "$out/bench_apps_cuda.log"
$py benchmarks/bench_apps.py "${quick[@]}" --device cuda --chains 64 --size 224 --json "$out/apps_cuda_64x224.json" \
    2>&1 | tee "$out/bench_apps_cuda_64x224.log"
$py benchmarks/bench_sampler.py "${quick[@]}" --device cuda 2>&1 | tee "$out/bench_sampler_cuda.log"
$py -m langevin_images.cli train-style --kind johnson --style ihc --size 128 --batch 4 \
    --steps "$([ ${#quick[@]} -eq 0 ] && echo 200 || echo 40)" --device cuda --quiet --force \
    --out "${TMPDIR:-/tmp}/train_style_cuda" 2>&1 | tee "$out/train_style_cuda.log"
cp "${TMPDIR:-/tmp}/train_style_cuda/run.json" "$out/train_style_cuda.json" 2>/dev/null
