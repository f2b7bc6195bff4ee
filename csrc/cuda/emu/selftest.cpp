// Kernels with known bugs (and their fixed twins) for the emulator's own tests
// (tests/test_cuda_emu.py::test_emulator_detects_*): each shows one class of kernel bug the
// emulator reports, or (missing_sync) the schedule dependence it exposes.  Only in _cuda_emu.
#include <string>

#include "../common.cuh"

namespace fastscale {
namespace emu {
namespace {

constexpr unsigned FULL = 0xffffffffu;

// out[t] = what thread t+1 wrote to shared memory; with SYNC the barrier makes it defined.
template <bool SYNC>
__global__ void neighbour_kernel(int* out) {
  __shared__ int sh[256];
  const int t = threadIdx.x;
  sh[t] = t + 1;
  if (SYNC) __syncthreads();
  out[t] = sh[(t + 1) % blockDim.x];
}

__global__ void shfl_exited_kernel(int* out) {
  if ((threadIdx.x & 31) >= 16) return;  // half the warp leaves
  out[threadIdx.x] = __shfl_sync(FULL, static_cast<int>(threadIdx.x), 0);
}

__global__ void mask_mismatch_kernel(int* out) {
  const unsigned m = (threadIdx.x & 31) == 0 ? 0x1u : FULL;
  out[threadIdx.x] = static_cast<int>(__ballot_sync(m, 1));
}

__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 32) __syncthreads();
  else __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void exited_barrier_kernel(int* out) {
  if (threadIdx.x >= 64) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void deadlock_kernel(int* out) {
  if (threadIdx.x == 0) __syncthreads();
  else out[threadIdx.x] = __shfl_sync(FULL, 1, 0);
}

__global__ void partial_warp_kernel(int* out) { out[threadIdx.x] = static_cast<int>(__ballot_sync(FULL, 1)); }

__global__ void shfl_outside_mask_kernel(int* out) {
  // Lanes 0..15 shuffle among themselves but read lane 20.
  if ((threadIdx.x & 31) < 16) out[threadIdx.x] = __shfl_sync(0xffffu, 7, 20);
}

// Two half-warps shuffle apart (disjoint masks, allowed): out[t] = lane 0 (or 16) of its half * 10.
__global__ void half_warps_kernel(int* out) {
  const int lane = threadIdx.x & 31;
  const unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  out[threadIdx.x] = __shfl_sync(half, lane * 10, lane < 16 ? 0 : 16);
}

// Correct warp and block cooperation: out[w] = sum of lane ids of warp w (shfl_down tree),
// out[32 + t] = ballot of even lanes, out[64 + t] = shfl from lane (t+3) % 32.
__global__ void ok_kernel(int* out) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  int v = lane;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(FULL, v, o);
  if (lane == 0) out[w] = v;
  const unsigned b = __ballot_sync(FULL, (lane & 1) == 0);
  out[32 + threadIdx.x] = static_cast<int>(b);
  out[64 + threadIdx.x] = __shfl_sync(FULL, lane * 10, (lane + 3) & 31);
  __syncwarp();
  out[96 + threadIdx.x] = __any_sync(FULL, lane == 5) ? 1 : 0;
}

}  // namespace

// Runs the named case on out (int32, at least 256 elements); bad launch configurations and
// emulator-detected bugs throw, as through the real launchers.
void selftest(const std::string& name, std::uintptr_t out_ptr) {
  int* out = reinterpret_cast<int*>(out_ptr);
  const char* op = "emu_selftest";
  if (name == "missing_sync") FS_LAUNCH(1, 64, 0, nullptr, neighbour_kernel<false>)(out);
  else if (name == "with_sync") FS_LAUNCH(1, 64, 0, nullptr, neighbour_kernel<true>)(out);
  else if (name == "shfl_exited") FS_LAUNCH(1, 32, 0, nullptr, shfl_exited_kernel)(out);
  else if (name == "mask_mismatch") FS_LAUNCH(1, 32, 0, nullptr, mask_mismatch_kernel)(out);
  else if (name == "divergent_barrier") FS_LAUNCH(1, 64, 0, nullptr, divergent_barrier_kernel)(out);
  else if (name == "exited_barrier") FS_LAUNCH(1, 128, 0, nullptr, exited_barrier_kernel)(out);
  else if (name == "deadlock") FS_LAUNCH(1, 32, 0, nullptr, deadlock_kernel)(out);
  else if (name == "partial_warp") FS_LAUNCH(1, 48, 0, nullptr, partial_warp_kernel)(out);
  else if (name == "shfl_outside_mask") FS_LAUNCH(1, 32, 0, nullptr, shfl_outside_mask_kernel)(out);
  else if (name == "ok") FS_LAUNCH(1, 32, 0, nullptr, ok_kernel)(out);
  else if (name == "half_warps") FS_LAUNCH(1, 64, 0, nullptr, half_warps_kernel)(out);
  else if (name == "block_too_large") FS_LAUNCH(1, 2048, 0, nullptr, ok_kernel)(out);
  else if (name == "grid_zero") FS_LAUNCH(0, 32, 0, nullptr, ok_kernel)(out);
  else if (name == "grid_y_too_large") FS_LAUNCH(dim3(1, 70000), 32, 0, nullptr, ok_kernel)(out);
  else cuda::bad_arg(op, "unknown self-test " + name);
  FS_CUDA_LAUNCHED(op);
}

}  // namespace emu
}  // namespace fastscale
