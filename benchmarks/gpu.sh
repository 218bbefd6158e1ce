#!/usr/bin/env bash
# The GPU check in one call, for the lent GPU machine (no network there): installs the
# project's own wheels from .whl/ if present (see below), runs the CUDA tests through the real
# CLI (tests/gpu/test_cuda.py), then the benchmark. Everything lands in $OUT (default: .):
#   cuda_tests_sync.log, cuda_tests.log, gpu_bench.json, gpu_bench.log, discover_step.log (at most 8 minutes)
# Prepare .whl/ on a machine with the package registry (git ignores it; `run` carries it):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
#     --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl \
#     --platform manylinux_2_28_x86_64 pytorch-pretrained-biggan==0.1.1 boto3 botocore s3transfer jmespath \
#     segmentation-models-pytorch==0.6.0 albumentations==2.0.8 albucore==0.0.24 pydantic==2.13.4 \
#     pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 simsimd==6.5.16 \
#     stringzilla==5.3.2 pysodmetrics==1.6.2 tflite isal
# (pinned: --no-deps takes each name's newest, and a newer albucore needs numkong, which albumentations
# 2.0.8 does not name; pydantic pins its pydantic-core exactly.)
# Usage, from the repository root:  bash benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
mkdir -p "$out"
python="${PYTHON:-python3}"
source benchmarks/gpu_env.sh
"$python" -c "import torch, saliency; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

status=0
# 1. CUDA correctness through the real CLI, tiny sizes (sample, discover killed and resumed,
#    synthesize, train-unet eager and --compile, eval, predict, pipeline, two ranks' SyncBatchNorm)
#    The two-rank SyncBatchNorm check first, with its own limit, so a slow chain cannot crowd it out.
# -o addopts=: one pytest process (pytest.ini's -n needs pytest-xdist, which the GPU image may lack).
timeout -s INT -k 10 100 "$python" -m pytest -q -o addopts= -p no:cacheprovider -m cuda tests/gpu/test_cuda.py -k two_processes 2>&1 \
  | tee "$out/cuda_tests_sync.log" || status=1
timeout -s INT -k 10 220 "$python" -m pytest -q -o addopts= -p no:cacheprovider -m cuda tests/gpu/test_cuda.py -k "not two_processes" \
  --durations=0 2>&1 | tee "$out/cuda_tests.log" || status=1
# 2. The paper's settings, timed (random weights: speed does not depend on their values): forward
#    at batch 32 and 256 in fp32 and bf16, the discovery step, synthesis and its ratio to a bare
#    forward, U-Net training in memory and through the real loader, eval's forward, the projection
timeout 110 "$python" benchmarks/gpu_bench.py --device auto --seconds 4 --out "$out/gpu_bench.json" "$@" 2>&1 \
  | tee "$out/gpu_bench.log" || status=1
weights=$(mktemp -d)
"$python" -c "import sys; sys.path.insert(0, 'tests'); from published_layouts import save_random_biggan; save_random_biggan(sys.argv[1])" "$weights"
timeout 50 "$python" benchmarks/discover_step.py --generator biggan-deep-128 --weights "$weights" --device cuda \
  --steps 10 --rounds 3 2>&1 | tee "$out/discover_step.log" || status=1
exit "$status"
