// Shared pieces of the CUDA kernels: error checking that names op and file:line, the stream
// type every launcher takes (CuPy's current stream, passed as an integer), the device error
// word, 16-byte vector access, and launch-shape helpers.
//
// This header is included by the nvcc-compiled kernels (*.cu) and by the host-compiled
// bindings (bind.cpp); everything device-side sits behind FS_DEVICE_CODE: nvcc, or the CPU
// emulator (FASTSCALE_CUDA_EMU: the same sources built as host C++ into _cuda_emu, see
// emu/cuda_emu.h).
#pragma once

#ifdef FASTSCALE_CUDA_EMU
#include "emu/cuda_emu.h"
#else
#include <cuda_runtime.h>
#endif

#if defined(__CUDACC__) || defined(FASTSCALE_CUDA_EMU)
#define FS_DEVICE_CODE 1
#endif

// A kernel launch: FS_LAUNCH(grid, block, smem, stream, kernel<...>)(args...) is
// kernel<...><<<grid, block, smem, stream>>>(args...) under nvcc and the emulator's launch
// otherwise (`<<<>>>` cannot come from a macro argument list; the kernel goes last because
// its template arguments contain commas).
#ifdef FASTSCALE_CUDA_EMU
#define FS_LAUNCH(grid, block, smem, stream, ...) FS_EMU_LAUNCH(grid, block, smem, stream, __VA_ARGS__)
#else
#define FS_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#endif

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

namespace fastscale {
namespace cuda {

using i64 = std::int64_t;
using u64 = unsigned long long;  // the type CUDA's 64-bit atomicMin takes

[[noreturn]] inline void fail(const char* op, cudaError_t err, const char* file, int line) {
  throw std::runtime_error(std::string(op) + ": CUDA error " + cudaGetErrorName(err) + " (" +
                           cudaGetErrorString(err) + ") at " + file + ":" + std::to_string(line));
}

#define FS_CUDA_CHECK(op, expr)                                         \
  do {                                                                  \
    cudaError_t fs_err_ = (expr);                                       \
    if (fs_err_ != cudaSuccess) ::fastscale::cuda::fail(op, fs_err_, __FILE__, __LINE__); \
  } while (0)

// After a launch: a bad configuration is reported now (no synchronisation; an error inside
// the kernel surfaces at the caller's next synchronising CUDA call).
#define FS_CUDA_LAUNCHED(op) FS_CUDA_CHECK(op, cudaGetLastError())

// A launcher's bad argument (a bug in a Python adapter, never user input: the adapter has
// checked that) is a std::invalid_argument, which pybind11 turns into ValueError.
[[noreturn]] inline void bad_arg(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string(op) + ": " + what);
}

int device_count();
std::string device_name(int device);
int runtime_version();

inline cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }
template <class T>
inline T* as_ptr(std::uintptr_t p) { return reinterpret_cast<T*>(p); }

// ---------------------------------------------------------------- the device error word
// One u64 in device memory that Python allocates (fastscale/ops/_cuda_util.py) and keeps
// at NO_ERROR.  A kernel that meets bad input atomicMin's a code into it:
//
//     code = tag | prio << 46 | pos << 2 | kind
//
// tag (bits 48..63) numbers the call inside a deferred-check context (0 otherwise), so the
// earliest failing call wins; prio orders checks inside one call (offsets before ids, as
// the CPU checks them); pos is the flat position of the first bad entry; kind says which
// exception Python raises.  Kernels that write state the caller keeps (an `out=` gradient,
// parameters) first test the word and skip all writes when any earlier check failed.
constexpr u64 NO_ERROR = ~0ull;
enum ErrKind : int { ERR_ID = 0, ERR_OFFSET = 1, ERR_ORDER = 2, ERR_TARGET = 3 };

inline u64 err_code(u64 tag, int prio, i64 pos, int kind) {
  return tag | (static_cast<u64>(prio) << 46) | (static_cast<u64>(pos) << 2) | static_cast<u64>(kind);
}

#ifdef FS_DEVICE_CODE
__device__ __forceinline__ void report(u64* err, u64 tag, int prio, i64 pos, int kind) {
  atomicMin(err, tag | (static_cast<u64>(prio) << 46) | (static_cast<u64>(pos) << 2) | static_cast<u64>(kind));
}
// True when the word is set: by an earlier kernel of the stream (complete, hence visible),
// or possibly by another block of this very launch.  Called at kernel start with all 32
// lanes active; the answer is made warp-uniform so that a warp never splits around its
// shuffles and ballots when a concurrent block reports an error meanwhile.
__device__ __forceinline__ bool failed(const u64* err) {
  const bool f = err != nullptr && *reinterpret_cast<const volatile u64*>(err) != NO_ERROR;
  return __any_sync(0xffffffffu, f);
}

// For a kernel that both tests the word and reports into it: true when the word holds a code
// below `code` (an earlier call of a deferred-check context: smaller tag; an earlier check of
// this call: smaller prio), but not for codes this kernel's own warps report meanwhile
// (>= code).  With failed() a warp that started after another block had reported skipped its
// own checks, so the position reported depended on the order blocks ran in, not always the
// first bad entry.  Warp-uniform, as failed().
__device__ __forceinline__ bool failed_before(const u64* err, u64 code) {
  const bool f = err != nullptr && *reinterpret_cast<const volatile u64*>(err) < code;
  return __any_sync(0xffffffffu, f);
}

// ---------------------------------------------------------------- 16-byte vectors
// Vec<T>: 16 bytes of T (float4 / double2) used when a row's byte length is a multiple of
// 16 and its base is 16-byte aligned; Vec1<T>: the scalar path otherwise.  Both expose
// L (elements), load, store, fma-accumulate and scale.
template <class T> struct V16;
template <> struct V16<float> { using type = float4; };
template <> struct V16<double> { using type = double2; };

template <class T>
struct Vec {
  static constexpr int L = 16 / sizeof(T);
  using raw = typename V16<T>::type;
  T v[L];
  __device__ __forceinline__ static Vec zero() {
    Vec r;
#pragma unroll
    for (int i = 0; i < L; ++i) r.v[i] = T(0);
    return r;
  }
  __device__ __forceinline__ static Vec load(const T* p) {  // p: 16-byte aligned
    raw x = __ldg(reinterpret_cast<const raw*>(p));
    Vec r;
    memcpy(r.v, &x, 16);
    return r;
  }
  __device__ __forceinline__ static Vec load_rw(const T* p) {  // may alias a written array
    raw x = *reinterpret_cast<const raw*>(p);
    Vec r;
    memcpy(r.v, &x, 16);
    return r;
  }
  __device__ __forceinline__ void store(T* p) const {
    raw x;
    memcpy(&x, v, 16);
    *reinterpret_cast<raw*>(p) = x;
  }
  __device__ __forceinline__ void add(const Vec& o, T c) {
#pragma unroll
    for (int i = 0; i < L; ++i) v[i] += c * o.v[i];
  }
  __device__ __forceinline__ void add(const Vec& o) {
#pragma unroll
    for (int i = 0; i < L; ++i) v[i] += o.v[i];
  }
  __device__ __forceinline__ void scale(T c) {
#pragma unroll
    for (int i = 0; i < L; ++i) v[i] *= c;
  }
};

template <class T>
struct Vec1 {
  static constexpr int L = 1;
  T v[1];
  __device__ __forceinline__ static Vec1 zero() { return Vec1{{T(0)}}; }
  __device__ __forceinline__ static Vec1 load(const T* p) { return Vec1{{__ldg(p)}}; }
  __device__ __forceinline__ static Vec1 load_rw(const T* p) { return Vec1{{*p}}; }
  __device__ __forceinline__ void store(T* p) const { *p = v[0]; }
  __device__ __forceinline__ void add(const Vec1& o, T c) { v[0] += c * o.v[0]; }
  __device__ __forceinline__ void add(const Vec1& o) { v[0] += o.v[0]; }
  __device__ __forceinline__ void scale(T c) { v[0] *= c; }
};

// Bags: CSR (offsets, validated before any kernel reads them) or padded (B, T) rows.
template <class I, class O>
struct Bags {
  const I* ids;
  const O* offsets;  // nullptr: padded with Tlen ids per bag
  i64 Tlen;
  __device__ __forceinline__ i64 begin(i64 b) const { return offsets ? static_cast<i64>(offsets[b]) : b * Tlen; }
  __device__ __forceinline__ i64 end(i64 b) const {
    return offsets ? static_cast<i64>(offsets[b + 1]) : (b + 1) * Tlen;
  }
};
#endif  // FS_DEVICE_CODE

// A row of D elements of T at aligned addresses can use 16-byte vectors.
inline bool vec_ok(i64 D, int elem_size, std::initializer_list<std::uintptr_t> ptrs) {
  if ((D * elem_size) % 16 != 0) return false;
  for (std::uintptr_t p : ptrs)
    if (p % 16 != 0) return false;
  return true;
}

// Vectors (or scalars) per lane for one warp covering a row of `units` vectors: 1, 2, 4 or 8
// (beyond 8 * 32 units the kernels loop over column chunks).
inline int per_lane(i64 units) {
  if (units <= 32) return 1;
  if (units <= 64) return 2;
  if (units <= 128) return 4;
  return 8;
}

constexpr int WARPS_PER_BLOCK = 8;  // warp-per-item kernels: 256 threads a block

inline unsigned blocks_for(i64 n, int per_block, i64 cap = (i64(1) << 31) - 1) {
  i64 b = (n + per_block - 1) / per_block;
  if (b < 1) b = 1;
  if (b > cap) b = cap;
  return static_cast<unsigned>(b);
}

// Number of bits that represent every value in [0, v].
inline int bits_for(u64 v) {
  int b = 1;
  while (b < 64 && (v >> b) != 0) ++b;
  return b;
}

// ---------------------------------------------------------------- dtype dispatch (host)
// f(T{}) with T = float / double from an element size; f(I{}) with I = int32 / int64.
template <class F>
auto with_float(int fsize, const char* op, F&& f) {
  if (fsize == 4) return f(float{});
  if (fsize == 8) return f(double{});
  bad_arg(op, "float element size must be 4 or 8, got " + std::to_string(fsize));
}
template <class F>
auto with_index(int isize, const char* op, F&& f) {
  if (isize == 4) return f(std::int32_t{});
  if (isize == 8) return f(std::int64_t{});
  bad_arg(op, "index element size must be 4 or 8, got " + std::to_string(isize));
}
// f(std::integral_constant<int, NV>{}) with NV = per_lane(units).
template <int N>
struct IntC {
  static constexpr int value = N;
};
template <class F>
void with_nv(i64 units, F&& f) {
  switch (per_lane(units)) {
    case 1: f(IntC<1>{}); break;
    case 2: f(IntC<2>{}); break;
    case 4: f(IntC<4>{}); break;
    default: f(IntC<8>{}); break;
  }
}

inline void need(bool ok, const char* op, const char* what) {
  if (!ok) bad_arg(op, what);
}

}  // namespace cuda
}  // namespace fastscale
