# Sourced by the GPU scripts (benchmarks/gpu.sh, gpu_paper_budget.sh), from the repository root,
# with $python set: names the GPU, installs the project's wheels from .whl/ (if present) into a
# folder of their own (the image's environment may not be writable), and puts the project and
# that folder on PYTHONPATH, offline.
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
site=""
if [ -d .whl ]; then
  site=$(mktemp -d)
  "$python" -m pip install -q --no-index --no-deps --target "$site" .whl/*.whl || echo "$(basename "$0"): wheel install failed"
fi
export PYTHONPATH="$PWD${site:+:$site}${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
