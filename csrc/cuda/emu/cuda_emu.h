// A CPU emulation of the subset of CUDA that csrc/cuda uses, so the kernels' logic (index
// math, bounds, launch shapes, block / warp cooperation, the error word, determinism) runs
// and is tested on machines without a GPU (fastscale._cuda_emu, CMake FASTSCALE_CUDA_EMU).
//
// Model (numba's CUDA simulator, but for C++):
// * A launch runs its blocks one after another; the threads of a block are cooperative
//   fibers on one OS thread (hand-rolled x86-64 context switch, cuda_emu.cpp).  A thread
//   runs until it reaches a synchronisation point (__syncthreads, a warp intrinsic) or exits,
//   then the next runnable thread of the block runs.  No races in the emulator itself, and
//   runs are reproducible for a given schedule.
// * The order in which blocks and threads are run is selectable (forward, reverse, seeded
//   random: emu::set_schedule): a kernel whose result depends on it has a race (a missing
//   __syncthreads, a cross-block dependency, an order-dependent float sum).
// * __syncthreads waits for every thread of the block and fails when some have exited or
//   threads wait at different __syncthreads (divergent barrier).  Warp intrinsics wait for
//   every lane named in the mask and fail on a mask / intrinsic mismatch, a caller outside
//   its own mask, a named lane that exited or does not exist, a shuffle from a lane outside
//   the mask, a collective whose mask overlaps a pending one's (disjoint masks may be pending
//   together, as two half-warps shuffling apart); a block where no thread can progress is
//   reported as a deadlock.
// * __shared__ variables are static storage, shared by the threads of the running block as
//   on the GPU.  They are filled with 0xff bytes (NaN, -1) before every block where GCC
//   honours the section attribute (non-template kernels); in template kernels (GCC ignores
//   the attribute there) a block sees what the previous block left, so shared memory read
//   before it is written shows as stale data from the second block on.
// * Launch configurations are checked as the driver does (cudaErrorInvalidConfiguration
//   through cudaGetLastError); an emulator-detected kernel bug throws std::runtime_error
//   from the launch, naming kernel, block, thread, file:line.
// * Device pointers are host addresses.  A fault inside a kernel (a guard page, unmapped
//   memory) is reported as an illegal address; other out-of-bounds accesses need ASan
//   (tools/sanitize.sh builds this module with it).
//
// Not modelled (so not detected): true concurrency between blocks and between warps
// (memory-model races, missing fences or volatile, a block waiting on another block), the
// read-only cache (__ldg of data the same kernel writes), __launch_bounds__ and register /
// shared-memory limits, __host__ / __device__ qualifier errors (nvcc catches those),
// performance.  Threads only switch at synchronisation points, so a race between two
// threads of one warp with no intrinsic between them shows only through the thread order.
#pragma once

#include <math.h>  // libstdc++'s wrapper: float overloads of exp, tanh, ... as in device code
#include <string.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

// ---------------------------------------------------------------- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Static storage in a section whose bounds the linker exposes (__start_/__stop_), so the
// emulator can poison it before each block.
#define __shared__ static __attribute__((section("fs_emu_shared"), aligned(16)))

// ---------------------------------------------------------------- vector types
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) double2 {
  double x, y;
};
struct alignas(16) int4 {
  int x, y, z, w;
};

// ---------------------------------------------------------------- runtime API
typedef struct CUstream_st* cudaStream_t;
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorNoDevice = 100,
  cudaErrorLaunchFailure = 719,
};
struct cudaDeviceProp {
  char name[256];
  int major, minor;
};
const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s = nullptr);
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaRuntimeGetVersion(int* v);

namespace fastscale {
namespace emu {

// Built-in variables of the running fiber (set by the scheduler at every switch).
extern uint3 tid_, bid_;
extern dim3 bdim_, gdim_;

enum Order : int { FORWARD = 0, REVERSE = 1, RANDOM = 2 };
// The order blocks and the threads of a block are run in; seed for RANDOM.
void set_schedule(int order, unsigned long long seed);
// Number of launches run so far and a log of the kernels (for tests).
void clear_log();
std::string launch_log();  // one line per launch: kernel grid block

// Runs one of the self-test kernels (emu/selftest.cpp) on out (int32 x 256).
void selftest(const std::string& name, std::uintptr_t out);

[[noreturn]] void fail(const std::string& what, const char* file, int line);

// One collective warp operation of the calling lane; returns the lane's result.
enum Coll : int { SHFL = 0, SHFL_DOWN = 1, SHFL_UP = 2, SHFL_XOR = 3, BALLOT = 4, ANY = 5, ALL = 6, SYNCWARP = 7 };
unsigned long long warp_collective(int kind, unsigned mask, unsigned long long value, int arg, int width,
                                   const char* file, int line);
void syncthreads(const char* file, int line);

// A launch: config checks, then every block, every thread as a fiber running body(ctx).
// name: the kernel (from __PRETTY_FUNCTION__).  Throws std::runtime_error on a kernel bug.
void run_launch(const char* name, const char* file, int line, dim3 grid, dim3 block, size_t smem,
                void (*body)(void*), void* ctx);

template <class F>
inline const char* kernel_name() {
  return __PRETTY_FUNCTION__;
}

template <class... P>
struct Launch {
  void (*k)(P...);
  const char* name;
  const char* file;
  int line;
  dim3 grid, block;
  size_t smem;
  template <class... A>
  void operator()(A&&... a) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
    // Arguments are converted to the parameter types once, as a launch does; every thread
    // then gets its own copy (by-value parameters).
    struct Ctx {
      void (*k)(P...);
      std::tuple<std::decay_t<P>...> args;
    } ctx{k, std::tuple<std::decay_t<P>...>(std::forward<A>(a)...)};
    run_launch(name, file, line, grid, block, smem,
               [](void* c) {
                 Ctx* x = static_cast<Ctx*>(c);
                 std::apply(x->k, x->args);
               },
               &ctx);
  }
};

template <auto K>
struct KName {
  static const char* get() { return __PRETTY_FUNCTION__; }
};

template <auto K, class... P>
inline Launch<P...> make_launch(void (*)(P...), const char* file, int line, dim3 grid, dim3 block, size_t smem,
                                cudaStream_t) {
  return Launch<P...>{K, KName<K>::get(), file, line, grid, block, smem};
}

}  // namespace emu
}  // namespace fastscale

// grid / block may be integers or dim3; stream is accepted and ignored (one stream, in order).
#define FS_EMU_LAUNCH(grid, block, smem, stream, ...)                                                     \
  ::fastscale::emu::make_launch<__VA_ARGS__>(__VA_ARGS__, __FILE__, __LINE__, dim3(grid), dim3(block), \
                                             static_cast<size_t>(smem), (stream))

#define threadIdx (::fastscale::emu::tid_)
#define blockIdx (::fastscale::emu::bid_)
#define blockDim (::fastscale::emu::bdim_)
#define gridDim (::fastscale::emu::gdim_)

// ---------------------------------------------------------------- device functions
inline void __syncthreads_impl(const char* file, int line) { fastscale::emu::syncthreads(file, line); }
#define __syncthreads() __syncthreads_impl(__FILE__, __LINE__)

namespace fastscale {
namespace emu {
template <class T>
inline unsigned long long to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "warp shuffle of a type over 8 bytes");
  unsigned long long b = 0;
  memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
inline T from_bits(unsigned long long b) {
  T v;
  memcpy(&v, &b, sizeof(T));
  return v;
}
}  // namespace emu
}  // namespace fastscale

template <class T>
inline T __shfl_sync_impl(unsigned mask, T v, int src, int width, const char* f, int l) {
  using namespace fastscale::emu;
  return from_bits<T>(warp_collective(SHFL, mask, to_bits(v), src, width, f, l));
}
template <class T>
inline T __shfl_down_sync_impl(unsigned mask, T v, unsigned d, int width, const char* f, int l) {
  using namespace fastscale::emu;
  return from_bits<T>(warp_collective(SHFL_DOWN, mask, to_bits(v), static_cast<int>(d), width, f, l));
}
template <class T>
inline T __shfl_up_sync_impl(unsigned mask, T v, unsigned d, int width, const char* f, int l) {
  using namespace fastscale::emu;
  return from_bits<T>(warp_collective(SHFL_UP, mask, to_bits(v), static_cast<int>(d), width, f, l));
}
template <class T>
inline T __shfl_xor_sync_impl(unsigned mask, T v, int m, int width, const char* f, int l) {
  using namespace fastscale::emu;
  return from_bits<T>(warp_collective(SHFL_XOR, mask, to_bits(v), m, width, f, l));
}
#define __shfl_sync(mask, v, ...) __shfl_sync_impl(mask, v, FS_EMU_SHFL_ARGS(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_down_sync(mask, v, ...) \
  __shfl_down_sync_impl(mask, v, FS_EMU_SHFL_ARGS(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_up_sync(mask, v, ...) __shfl_up_sync_impl(mask, v, FS_EMU_SHFL_ARGS(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_xor_sync(mask, v, ...) \
  __shfl_xor_sync_impl(mask, v, FS_EMU_SHFL_ARGS(__VA_ARGS__), __FILE__, __LINE__)
// (lane) or (lane, width): always pass the width (32 by default).
#define FS_EMU_SHFL_ARGS(...) FS_EMU_SHFL_PICK(__VA_ARGS__, 32)
#define FS_EMU_SHFL_PICK(a, w, ...) a, w
#define __ballot_sync(mask, pred)                                                                          \
  static_cast<unsigned>(::fastscale::emu::warp_collective(::fastscale::emu::BALLOT, mask, (pred) ? 1 : 0, 0, \
                                                          32, __FILE__, __LINE__))
#define __any_sync(mask, pred)                                                                                   \
  (::fastscale::emu::warp_collective(::fastscale::emu::ANY, mask, (pred) ? 1 : 0, 0, 32, __FILE__, __LINE__) != \
   0)
#define __all_sync(mask, pred)                                                                                   \
  (::fastscale::emu::warp_collective(::fastscale::emu::ALL, mask, (pred) ? 1 : 0, 0, 32, __FILE__, __LINE__) != \
   0)
#define __syncwarp(...) FS_EMU_SYNCWARP(__VA_ARGS__ + 0)
#define FS_EMU_SYNCWARP(m)                                                                                    \
  ((void)::fastscale::emu::warp_collective(::fastscale::emu::SYNCWARP, (m) == 0 ? 0xffffffffu : (m), 0, 0, 32, \
                                           __FILE__, __LINE__))

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
template <class T>
inline T __ldg(const T* p) {
  return *p;
}

// Atomics: plain read-modify-writes (one OS thread runs every fiber); they return the old value.
template <class T>
inline T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <class T>
inline T atomicMin(T* p, T v) {
  const T old = *p;
  if (v < old) *p = v;
  return old;
}
template <class T>
inline T atomicMax(T* p, T v) {
  const T old = *p;
  if (v > old) *p = v;
  return old;
}
template <class T>
inline T atomicExch(T* p, T v) {
  const T old = *p;
  *p = v;
  return old;
}
template <class T>
inline T atomicCAS(T* p, T cmp, T v) {
  const T old = *p;
  if (old == cmp) *p = v;
  return old;
}

// ---------------------------------------------------------------- cub (the two calls used)
// The two-call protocol: with d_temp == nullptr only the size is returned.  The host does
// the work: a stable LSD sort on bits [begin_bit, end_bit), an in-order scan.
namespace cub {
struct DeviceRadixSort {
  static cudaError_t SortPairs(void* d_temp, size_t& temp_bytes, const unsigned* keys_in, unsigned* keys_out,
                               const unsigned* vals_in, unsigned* vals_out, int n, int begin_bit = 0,
                               int end_bit = 32, cudaStream_t s = nullptr, bool debug = false);
};
struct DeviceScan {
  static cudaError_t InclusiveSum(void* d_temp, size_t& temp_bytes, const unsigned* in, unsigned* out, int n,
                                  cudaStream_t s = nullptr, bool debug = false);
};
}  // namespace cub
