#include "common.h"

#include <omp.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <atomic>
#include <cstdlib>
#include <cstring>

namespace fastscale {

Isa detected_isa() {
#if FS_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::scalar;
}

static Isa choose_isa() {
  Isa best = detected_isa();
  const char* cap = std::getenv("FASTSCALE_ISA");
  if (cap && *cap) {
    Isa want = best;
    if (!std::strcmp(cap, "scalar")) want = Isa::scalar;
    else if (!std::strcmp(cap, "avx2")) want = Isa::avx2;
    else if (!std::strcmp(cap, "avx512")) want = Isa::avx512;
    best = static_cast<Isa>(std::min(static_cast<int>(want), static_cast<int>(best)));
  }
  return best;
}

Isa active_isa() {
  static const Isa isa = choose_isa();
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "scalar";
  }
}

// A process-wide count, passed to every parallel region with num_threads(): OpenMP's own
// setting is per calling thread, and the ops are called from any Python thread.
static std::atomic<int> g_num_threads{0};
int get_num_threads() {
  int n = g_num_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}
void set_num_threads(int n) { g_num_threads.store(n, std::memory_order_relaxed); }

const char* dt_name(Dt dt) {
  switch (dt) {
    case Dt::f32: return "float32";
    case Dt::f64: return "float64";
    case Dt::i32: return "int32";
    case Dt::i64: return "int64";
    case Dt::u8: return "bool";
  }
  return "?";
}

bool is_dtype(const py::array& a, Dt dt) {
  const auto d = a.dtype();
  switch (dt) {
    case Dt::f32: return d.kind() == 'f' && d.itemsize() == 4;
    case Dt::f64: return d.kind() == 'f' && d.itemsize() == 8;
    case Dt::i32: return d.kind() == 'i' && d.itemsize() == 4;
    case Dt::i64: return d.kind() == 'i' && d.itemsize() == 8;
    case Dt::u8: return (d.kind() == 'b' || d.kind() == 'u') && d.itemsize() == 1;
  }
  return false;
}

void* data_ptr(const py::array& a, Dt dt, const char* op, const char* name, bool writable) {
  if (!is_dtype(a, dt))
    throw py::type_error(std::string(op) + ": argument '" + name + "' must have dtype " + dt_name(dt) +
                         ", got " + std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(op) + ": argument '" + name + "' must be C-contiguous");
  // A misaligned T* is undefined behaviour in the kernels (the Python adapters copy such inputs).
  if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
    throw py::value_error(std::string(op) + ": argument '" + name + "' must be aligned to its dtype");
  if (writable && !a.writeable())
    throw py::value_error(std::string(op) + ": argument '" + name + "' must be writeable");
  return const_cast<void*>(a.data());
}

i64 dim(const py::array& a, int axis) { return static_cast<i64>(a.shape(axis)); }

// One unsigned compare catches negative ids too; a branch-free OR over a block vectorises.
template <class I>
FS_INLINE void any_bad_body(const I* ids, i64 n, i64 V, int* out) {
  using U = std::make_unsigned_t<I>;
  const U lim = static_cast<U>(V > static_cast<i64>(std::numeric_limits<I>::max()) ? std::numeric_limits<I>::max() : V);
  const bool all_ok_type = V > static_cast<i64>(std::numeric_limits<I>::max());  // only negatives can be bad
  int bad = 0;
  if (all_ok_type) {
    for (i64 i = 0; i < n; ++i) bad |= ids[i] < 0;
  } else {
    for (i64 i = 0; i < n; ++i) bad |= static_cast<U>(ids[i]) >= lim;
  }
  *out = bad;
}
FS_MULTIVERSION(any_bad, any_bad_body)
template <class I>
i64 first_bad_id(const I* ids, i64 n, i64 V) {
  // The common path is one vectorised scan for "any bad"; the exact first position is
  // searched for only when something is wrong.
  int bad = 0;
  const i64 block = 1 << 16;
  const i64 nblocks = (n + block - 1) / block;
#pragma omp parallel for reduction(| : bad) schedule(static) if (nblocks > 1) num_threads(get_num_threads())
  for (i64 j = 0; j < nblocks; ++j) {
    int r = 0;
    any_bad<I>(ids + j * block, std::min(block, n - j * block), V, &r);
    bad |= r;
  }
  if (!bad) return -1;
  for (i64 i = 0; i < n; ++i)
    if (static_cast<i64>(ids[i]) < 0 || static_cast<i64>(ids[i]) >= V) return i;
  return -1;
}

template <class I>
i64 first_bad_offset(const I* offsets, i64 n_offsets, i64 N) {
  if (n_offsets < 1) return 0;
  if (offsets[0] != 0) return 0;
  for (i64 i = 1; i < n_offsets; ++i)
    if (offsets[i] < offsets[i - 1] || static_cast<i64>(offsets[i]) > N) return i;
  if (static_cast<i64>(offsets[n_offsets - 1]) != N) return n_offsets - 1;
  return -1;
}

i64 sort_marked_rows(std::int32_t* mark, i64 V, std::int64_t* rows, i64 U) {
  // Small tables: a scan of mark yields the rows sorted; large ones: sort the few found.
  if (V <= 32 * U) {
    i64 j = 0;
    for (i64 v = 0; v < V; ++v)
      if (mark[v]) rows[j++] = v;
  } else {
    std::sort(rows, rows + U);
  }
  for (i64 j = 0; j < U; ++j) mark[rows[j]] = static_cast<std::int32_t>(j + 1);
  return U;
}

template i64 first_bad_id<std::int32_t>(const std::int32_t*, i64, i64);
template i64 first_bad_id<std::int64_t>(const std::int64_t*, i64, i64);
template i64 first_bad_offset<std::int32_t>(const std::int32_t*, i64, i64);
template i64 first_bad_offset<std::int64_t>(const std::int64_t*, i64, i64);

}  // namespace fastscale

namespace fastscale {
// STREAM-style copy over OpenMP threads, for reporting kernels as a fraction of the
// machine's memory bandwidth (benchmarks and `fastscale bench`).
void stream_copy(const float* FS_RESTRICT src, float* FS_RESTRICT dst, i64 n) {
#pragma omp parallel for schedule(static) num_threads(get_num_threads())
  for (i64 i = 0; i < n; ++i) dst[i] = src[i];
}
// a[i] = a[i] * s + b[i]: reads two streams and writes one (the read-modify-write pattern of
// an optimizer step).
void stream_rmw(float* FS_RESTRICT a, const float* FS_RESTRICT b, float s, i64 n) {
#pragma omp parallel for schedule(static) num_threads(get_num_threads())
  for (i64 i = 0; i < n; ++i) a[i] = a[i] * s + b[i];
}
}  // namespace fastscale
