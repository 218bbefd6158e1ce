#!/usr/bin/env bash
# The paper-budget MNIST runs continued on a lent GPU for a fixed time, with the CUDA tests
# beside them (a GPU lent for minutes is worth hours of the 2-core CPU these runs live on).
#   bash benchmarks/gpu_paper_budget.sh [SECONDS]    (default 420; from the repository root)
# Resumes every unfinished run of checkpoints/paper-budget with --device cuda (the sample
# stream stays the CPU's; segments.json records the GPU), starts later runs as earlier ones end,
# stops them all at a checkpoint when SECONDS have passed, and leaves in $OUT (default: .):
#   paper-budget.tar (the run folders, to unpack over checkpoints/ and commit), paper_budget.log,
#   cuda_tests_sync.log, cuda_tests.log.
# The project's wheels come from .whl/ as for benchmarks/gpu.sh (see there how to prepare them).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
seconds="${1:-420}"
python="${PYTHON:-python3}"
mkdir -p "$out"
began=$(date +%s)
source benchmarks/gpu_env.sh
log="$out/paper_budget.log"
budget() { "$python" benchmarks/paper_budget.py "$@" 2>&1 | tee -a "$log"; }

device="${PAPER_BUDGET_DEVICE:-cuda}"  # cpu: a dry run of this script on a machine without a GPU
budget resume --slots 3 --device "$device"
status=0
if [ "${CUDA_TESTS:-1}" = 1 ]; then  # correctness of the GPU path, while the runs play
  # -o addopts=: one pytest process (pytest.ini's -n needs pytest-xdist, which the GPU image may lack).
  timeout -s INT -k 10 100 "$python" -m pytest -q -o addopts= -p no:cacheprovider -m cuda tests/gpu/test_cuda.py -k two_processes 2>&1 \
    | tee "$out/cuda_tests_sync.log" || status=1
  timeout -s INT -k 10 220 "$python" -m pytest -q -o addopts= -p no:cacheprovider -m cuda tests/gpu/test_cuda.py -k "not two_processes" \
    --durations=0 2>&1 | tee "$out/cuda_tests.log" || status=1
fi
while [ $(( $(date +%s) - began )) -lt "$seconds" ]; do
  sleep 10
  "$python" benchmarks/paper_budget.py resume --slots 3 --device "$device" >>"$log" 2>&1  # runs whose turn came
done
budget stop --timeout 60
for run in checkpoints/paper-budget/*/; do tail -n 3 "$run/run.log" >>"$log" 2>/dev/null; done
tar -cf "$out/paper-budget.tar" --exclude=run.pid -C checkpoints paper-budget
exit "$status"
