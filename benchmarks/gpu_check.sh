#!/usr/bin/env bash
# The GPU check of issue 5, for one machine with an NVIDIA GPU (an H200: sm_90, driver for
# CUDA 13, Python with nvcc, CMake, ninja, pybind11, scikit-build-core, CuPy and PyTorch
# installed, no network).  Target: under 8 minutes.  From the repository root:
#
#     bash benchmarks/gpu_check.sh [IMDB_DIR]        # default: shared/data/imdb in the checkout
#
# 1. builds and installs fastscale with the CUDA extension (sm_90 only, to keep the build short)
# 2. shows what the library sees (backends, device, archs)
# 3. runs the cuda / cupy op tests, the training stack's GPU tests and the CUDA build test
# 4. runs benchmarks/bench_gpu.py: each op's time, GB/s and fraction of the copy bandwidth,
#    against CuPy and PyTorch, then one IMDB epoch with the data on the device
# Each step has its own time limit; a failing step is reported and the script goes on, and
# its exit status is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
IMDB="${1:-shared/data/imdb}"
ARCHS="${FASTSCALE_CUDA_ARCHS:-90}"
# The GPU image's interpreter (the one with CuPy and PyTorch) is `python3`; there may be no `python`.
PY="${PYTHON:-$(command -v python3 || command -v python)}"
export PATH="$PATH:/usr/local/cuda/bin"
start=$(date +%s)
failed=0
step() { echo; echo "== $* [$(( $(date +%s) - start )) s]"; }
run() {  # run LIMIT_S CMD...: one step under a time limit; count failures
  local limit=$1; shift
  timeout --signal=INT --kill-after=10 "$limit" "$@"
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    failed=$((failed + 1))
    if [ "$rc" -eq 124 ]; then echo "!! step hit its ${limit} s limit: $*"; else echo "!! step failed (exit $rc): $*"; fi
  fi
  return $rc
}

step "build + install with CUDA (sm_${ARCHS})"
command -v nvcc >/dev/null || { echo "nvcc not found"; exit 1; }
nvcc --version | tail -1
if ! run 240 "$PY" -m pip install --no-build-isolation --no-deps -q . \
      -Ccmake.define.FASTSCALE_CUDA=ON -Ccmake.define.FASTSCALE_CUDA_ARCHS="$ARCHS" \
      -Cbuild-dir=build/gpu_check; then
  echo "build failed: nothing else can run"; exit 1
fi

step "what fastscale sees"
# Run outside the checkout so `import fastscale` is the installed package, not src/.
run 60 bash -c 'cd /tmp && "$0" -c "import fastscale, fastscale._cuda as c; print(fastscale.backends()); print(c.info())"' "$PY"
(cd /tmp && "$PY" -m fastscale info) || true

step "tests: cuda / cupy backends of every op, the training stack on the GPU, and the CUDA build"
FASTSCALE_REQUIRE_CUDA=1 run 240 "$PY" -m pytest tests/ops tests/nn/test_gpu.py -k "cuda or cupy" -q -p no:randomly \
  -o addopts="" -m "not slow" --durations=5
FASTSCALE_REQUIRE_CUDA=1 run 60 "$PY" -m pytest tests/test_cuda_build.py -q -o addopts=""

step "benchmarks (bench_gpu.py) and one IMDB epoch"
run 150 "$PY" benchmarks/bench_gpu.py --imdb "$IMDB"

step "done: $failed failed step(s)"
exit "$failed"
