#!/usr/bin/env bash
# Run the op tests and the fuzz suite against an AddressSanitizer + UndefinedBehaviorSanitizer
# build of the C++ extension (issue 7, point 2).
#
#   tools/sanitize.sh                  # build build/sanitize, run tests/ops + tests/fuzz + tests/test_cuda_emu.py
#   tools/sanitize.sh tests/test_large.py -k cpp   # other pytest arguments instead
#   FASTSCALE_SANITIZE_BUILD=/tmp/san tools/sanitize.sh   # another build folder
#
# How it works:
# * _cpu and _cuda_emu (the CUDA kernels on the CPU emulator) are built with
#   -DFASTSCALE_SANITIZE=ON (-fsanitize=address,undefined, -fno-sanitize-recover=undefined)
#   into their own build folder, never into src/fastscale,
#   so the normal in-place build is left alone.
# * A staging package $BUILD/py/fastscale links every file of src/fastscale except the
#   extension, and the sanitized _cpu next to them; PYTHONPATH points there.
# * Python itself is not instrumented, so libasan is LD_PRELOADed (it must come first);
#   detect_leaks=0 because CPython's own allocations look like leaks at exit.  Any ASan
#   report or UBSan finding ends the run (halt_on_error=1) and its stack trace is written to
#   $BUILD/logs, printed at the end.  max_allocation_size_mb=1024 with
#   allocator_may_return_null turns a huge allocation (the fuzz suite's broadcasts) into a
#   MemoryError instead of filling the machine.
# * The tests run with FASTSCALE_SANITIZE_RUN=1, which the fuzz suite reads to use fewer
#   examples (everything is ~3x slower under ASan).
# Exit status: pytest's (non-zero on any failure or sanitizer abort).
# Takes about 6-8 minutes on the 2-core dev machine (build ~3 min, tests ~4 min).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${FASTSCALE_SANITIZE_BUILD:-$ROOT/build/sanitize}
PY=${PYTHON:-python}

# _cuda_emu too: the CUDA kernels on the CPU emulator (csrc/cuda/emu), so an out-of-bounds
# index in a kernel is an ASan report (tests/test_cuda_emu.py).
cmake -S . -B "$BUILD" -G Ninja -DFASTSCALE_SANITIZE=ON -DFASTSCALE_CUDA=OFF -DFASTSCALE_CUDA_EMU=ON \
  -DFASTSCALE_INPLACE=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >/dev/null
cmake --build "$BUILD" --target _cpu _cuda_emu

STAGE=$BUILD/py/fastscale
rm -rf "$BUILD/py"
mkdir -p "$STAGE"
for f in "$ROOT"/src/fastscale/*; do
  case "$(basename "$f")" in
    _cpu*.so | _cuda_emu*.so | __pycache__) ;;
    *) ln -s "$f" "$STAGE/" ;;
  esac
done
ln -s "$(ls "$BUILD"/_cpu*.so | head -1)" "$STAGE/"
ln -s "$(ls "$BUILD"/_cuda_emu*.so | head -1)" "$STAGE/"

LIBASAN=$(${CXX:-c++} -print-file-name=libasan.so)
[ -f "$LIBASAN" ] || { echo "sanitize.sh: libasan.so not found ($LIBASAN)" >&2; exit 2; }
# libstdc++ too: python does not link it, and ASan resolves its __cxa_throw interceptor at
# start-up; without it the first C++ exception (a binding's ValueError) fails an ASan CHECK.
LIBSTDCXX=$(${CXX:-c++} -print-file-name=libstdc++.so)
PRELOAD="$LIBASAN $LIBSTDCXX"

if [ $# -eq 0 ]; then set -- tests/ops tests/fuzz tests/test_cuda_emu.py; fi
# pytest captures fd 2, so a report printed there would be lost when the sanitizer ends the
# process: both write to $LOGS/{asan,ubsan}.<pid> instead, shown at the end.
LOGS=$BUILD/logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
start=$(date +%s)
set +e
env PYTHONPATH="$BUILD/py" FASTSCALE_SANITIZE_RUN=1 \
  LD_PRELOAD="$PRELOAD" \
  ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:allocator_may_return_null=1:max_allocation_size_mb=1024:detect_odr_violation=0:log_path=$LOGS/asan" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$LOGS/ubsan" \
  "$PY" -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
# Make sure the run really used the sanitized extension.
env PYTHONPATH="$BUILD/py" LD_PRELOAD="$PRELOAD" ASAN_OPTIONS=detect_leaks=0 "$PY" -c "
import fastscale._cpu as m, fastscale._cuda_emu as e, sys
for mod in (m, e):
    assert mod.__file__.startswith('$BUILD'), mod.__file__
    print('sanitize.sh: tests ran against', mod.__file__)"
# "failed to allocate" warnings are the huge allocations refused on purpose (MemoryError).
if compgen -G "$LOGS/*" >/dev/null && grep -l -E "ERROR|runtime error|CHECK failed" "$LOGS"/* >/dev/null; then
  for f in "$LOGS"/*; do echo "==== $f"; cat "$f"; done
  echo "sanitize.sh: sanitizer reports above (the fuzz suite's hang watchdog writes to \$TMPDIR/fastscale-fuzz-watchdog-*.txt)"
  [ $rc -ne 0 ] || rc=1
fi
echo "sanitize.sh: pytest exit $rc after $(( $(date +%s) - start )) s"
exit $rc
