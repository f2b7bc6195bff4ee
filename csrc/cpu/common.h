// Shared pieces of the CPU kernels: run-time ISA choice, the array checks every binding
// uses, and the id / offsets validation that runs before any kernel writes.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <type_traits>
#include <string>
#include <utility>
#include <pybind11/stl.h>

namespace fastscale {

namespace py = pybind11;
using i64 = std::int64_t;

// ---------------------------------------------------------------- ISA dispatch
// The extension is compiled for the portable x86-64 baseline; each hot kernel is also
// compiled with AVX2+FMA and AVX-512 target attributes (GCC propagates them to the OpenMP
// outlined regions) and one variant is chosen at run time.  FASTSCALE_ISA=scalar|avx2|avx512
// caps the choice (for tests and benchmarks).
enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2 };
Isa active_isa();  // cached after the first call
Isa detected_isa();
const char* isa_name(Isa isa);

#if defined(__x86_64__) || defined(_M_X64)
#define FS_X86 1
#define FS_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define FS_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))
#else
#define FS_X86 0
#define FS_TARGET_AVX2
#define FS_TARGET_AVX512
#endif
#define FS_INLINE inline __attribute__((always_inline))
#define FS_RESTRICT __restrict__

// NAME<Ts...>(args...): the NAME_avx512 / NAME_avx2 / NAME_scalar wrapper of the ISA in use.
#define FS_MV_DISPATCH(NAME)                                                               \
  template <class... Ts, class... Args>                                                    \
  static void NAME(Args... args) {                                                         \
    switch (::fastscale::active_isa()) {                                                   \
      case ::fastscale::Isa::avx512: NAME##_avx512<Ts...>(args...); break;                 \
      case ::fastscale::Isa::avx2: NAME##_avx2<Ts...>(args...); break;                     \
      default: NAME##_scalar<Ts...>(args...); break;                                       \
    }                                                                                      \
  }

// Declares NAME_scalar / NAME_avx2 / NAME_avx512 wrappers around the always-inline template
// BODY<Ts...> and picks one at run time:  FS_MULTIVERSION(name, body) then call
// name<T>(args...).  The body is inlined into each target-specific wrapper, so the
// compiler vectorises it for that ISA.  A BODY must not contain an OpenMP region (GCC
// outlines it before inlining, for the baseline ISA): call NAME per bag / per thread from
// a parallel loop instead.
#define FS_MULTIVERSION(NAME, BODY)                                                        \
  template <class... Ts, class... Args>                                                    \
  static void NAME##_scalar(Args... args) { BODY<Ts...>(args...); }                       \
  template <class... Ts, class... Args>                                                    \
  FS_TARGET_AVX2 static void NAME##_avx2(Args... args) { BODY<Ts...>(args...); }          \
  template <class... Ts, class... Args>                                                    \
  FS_TARGET_AVX512 static void NAME##_avx512(Args... args) { BODY<Ts...>(args...); }      \
  FS_MV_DISPATCH(NAME)

// As FS_MULTIVERSION, with a register budget: BODY<NV, Ts...> gets NV =
// std::integral_constant<int, n>, the 64-byte vector accumulators it may keep in registers:
// 8 on AVX-512 (32 zmm registers), 4 elsewhere (16 ymm / xmm registers hold 4 such vectors).
#define FS_MULTIVERSION_REGS(NAME, BODY)                                                   \
  template <class... Ts, class... Args>                                                    \
  static void NAME##_scalar(Args... args) { BODY<std::integral_constant<int, 4>, Ts...>(args...); } \
  template <class... Ts, class... Args>                                                    \
  FS_TARGET_AVX2 static void NAME##_avx2(Args... args) {                                   \
    BODY<std::integral_constant<int, 4>, Ts...>(args...);                                  \
  }                                                                                        \
  template <class... Ts, class... Args>                                                    \
  FS_TARGET_AVX512 static void NAME##_avx512(Args... args) {                               \
    BODY<std::integral_constant<int, 8>, Ts...>(args...);                                  \
  }                                                                                        \
  FS_MV_DISPATCH(NAME)

// ---------------------------------------------------------------- threads
// Every parallel region says num_threads(get_num_threads()).
int get_num_threads();
void set_num_threads(int n);

// parallel_chunks(n, nt, f): f(c) for every chunk c in [0, n), on the calling thread and up
// to nt - 1 pool workers, chunks claimed one at a time (dynamic scheduling); returns when all
// are done.  The training step's kernels use it instead of OpenMP, for its waiting policy
// (csrc/cpu/pool.cpp).  Jobs do not nest and do not overlap: a call made while the pool is
// busy runs its chunks on the calling thread alone.
using ChunkFn = void (*)(void* ctx, i64 chunk);
void parallel_chunks_raw(i64 n, int nt, ChunkFn fn, void* ctx);
template <class F>
void parallel_chunks(i64 n, int nt, F&& f) {
  using Fn = std::remove_reference_t<F>;
  parallel_chunks_raw(n, nt, [](void* ctx, i64 c) { (*static_cast<Fn*>(ctx))(c); }, const_cast<void*>(static_cast<const void*>(&f)));
}

// Race-free backward passes: thread t of nt owns the blocks of 16 table rows (or slots)
// with (row >> 4) % nt == t, zeroes them and adds into them in position order, so the
// result is bitwise the same for any thread count.  The owner test runs once per id, so
// the usual power-of-two thread counts take a mask instead of an integer division.
constexpr int OWN_SHIFT = 4;
FS_INLINE bool owns(i64 row, int t, int nt) {
  const i64 blk = row >> OWN_SHIFT;
  return ((nt & (nt - 1)) == 0 ? (blk & (nt - 1)) : (blk % nt)) == t;
}

// ---------------------------------------------------------------- array access
// O(1) checks only; the Python layer has already produced the exact dtypes and layouts,
// so a failure here is a bug in an adapter, reported as TypeError / ValueError, never a crash.
enum class Dt { f32, f64, i32, i64, u8 };

bool is_dtype(const py::array& a, Dt dt);
const char* dt_name(Dt dt);
// Pointer to the data of a C-contiguous array of dtype `dt`; `writable` also demands a
// writeable buffer.  Throws TypeError / ValueError naming `op` and `name`.
void* data_ptr(const py::array& a, Dt dt, const char* op, const char* name, bool writable = false);
template <class T>
const T* cptr(const py::array& a, Dt dt, const char* op, const char* name) {
  return static_cast<const T*>(data_ptr(a, dt, op, name, false));
}
template <class T>
T* mptr(const py::array& a, Dt dt, const char* op, const char* name) {
  return static_cast<T*>(data_ptr(a, dt, op, name, true));
}
i64 dim(const py::array& a, int axis);

// ---------------------------------------------------------------- validation
// Position of the first id outside [0, V), or -1.  Parallel; the result does not depend
// on the thread count.
template <class I>
i64 first_bad_id(const I* ids, i64 n, i64 V);
// Position of the first offsets entry that breaks "starts at 0, never decreases, ends at N",
// or -1.
template <class I>
i64 first_bad_offset(const I* offsets, i64 n_offsets, i64 N);

// The sparse backwards mark each row they meet (mark[row] = 1) and list it in rows[0:U];
// this sorts rows[0:U], sets mark[row] = 1 + its slot, and returns U.
i64 sort_marked_rows(std::int32_t* mark, i64 V, std::int64_t* rows, i64 U);

// Kernels report invalid input through a status the Python adapter turns into the op's
// uniform exception: 0 = ok, 1 + p = bad id at flat position p, -(1 + p) = bad offset at p.
inline i64 status_bad_id(i64 p) { return 1 + p; }
inline i64 status_bad_offset(i64 p) { return -(1 + p); }

}  // namespace fastscale

namespace fastscale {
// Calls f(T{}) with T the C++ type of a's dtype: float / double, or int32 / int64.
template <class F>
auto with_float(const py::array& a, const char* op, const char* name, F&& f) {
  if (is_dtype(a, Dt::f32)) return f(float{});
  if (is_dtype(a, Dt::f64)) return f(double{});
  throw py::type_error(std::string(op) + ": argument '" + name + "' must have dtype float32 or float64, got " +
                       std::string(py::str(a.dtype())));
}
template <class F>
auto with_index(const py::array& a, const char* op, const char* name, F&& f) {
  if (is_dtype(a, Dt::i32)) return f(std::int32_t{});
  if (is_dtype(a, Dt::i64)) return f(std::int64_t{});
  throw py::type_error(std::string(op) + ": argument '" + name + "' must have dtype int32 or int64, got " +
                       std::string(py::str(a.dtype())));
}
template <class T> constexpr Dt dt_of();
template <> constexpr Dt dt_of<float>() { return Dt::f32; }
template <> constexpr Dt dt_of<double>() { return Dt::f64; }
template <> constexpr Dt dt_of<std::int32_t>() { return Dt::i32; }
template <> constexpr Dt dt_of<std::int64_t>() { return Dt::i64; }

[[noreturn]] inline void shape_error(const char* op, const std::string& what) {
  throw py::value_error(std::string(op) + ": " + what);
}
}  // namespace fastscale
