#!/usr/bin/env bash
# The GPU benchmark in one call (no installs, no downloads): writes $OUT/gpu_bench.json.
# Usage on the lent GPU machine, from the repository root:  bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}/gpu_bench.json"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 450 python benchmarks/gpu_bench.py --device auto --seconds 10 --out "$out" "$@"
