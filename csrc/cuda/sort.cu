// The CUB pieces of the deterministic backward (sort ids, scan segment heads), compiled
// once here for the one key / value type the kernels use (u32), so the op files stay
// quick to compile.  Temp storage comes from the caller's workspace (Python allocates it).
#include "common.cuh"

#ifndef FASTSCALE_CUDA_EMU  // the emulator brings its own cub (emu/cuda_emu.h)
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>
#endif
#include "launchers.h"

namespace fastscale {
namespace cuda {

i64 segment_temp_bytes(i64 n, int end_bit) {
  size_t sort_bytes = 0, scan_bytes = 0;
  const int items = static_cast<int>(n);
  FS_CUDA_CHECK("segment_temp_bytes",
                cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const unsigned*>(nullptr),
                                                static_cast<unsigned*>(nullptr), static_cast<const unsigned*>(nullptr),
                                                static_cast<unsigned*>(nullptr), items, 0, end_bit, cudaStream_t(0)));
  FS_CUDA_CHECK("segment_temp_bytes",
                cub::DeviceScan::InclusiveSum(nullptr, scan_bytes, static_cast<const unsigned*>(nullptr),
                                              static_cast<unsigned*>(nullptr), items, cudaStream_t(0)));
  return static_cast<i64>(sort_bytes > scan_bytes ? sort_bytes : scan_bytes);
}

void sort_pairs_u32(void* temp, i64 temp_bytes, const unsigned* keys_in, unsigned* keys_out, const unsigned* vals_in,
                    unsigned* vals_out, i64 n, int end_bit, void* stream, const char* op) {
  if (n == 0) return;
  size_t bytes = static_cast<size_t>(temp_bytes);
  // Radix sort is stable: equal ids keep position order, so each segment is reduced in a
  // fixed order and the gradient is bitwise reproducible.
  FS_CUDA_CHECK(op, cub::DeviceRadixSort::SortPairs(temp, bytes, keys_in, keys_out, vals_in, vals_out,
                                                    static_cast<int>(n), 0, end_bit,
                                                    static_cast<cudaStream_t>(stream)));
}

void inclusive_sum_u32(void* temp, i64 temp_bytes, const unsigned* in, unsigned* out, i64 n, void* stream,
                       const char* op) {
  if (n == 0) return;
  size_t bytes = static_cast<size_t>(temp_bytes);
  FS_CUDA_CHECK(op, cub::DeviceScan::InclusiveSum(temp, bytes, in, out, static_cast<int>(n),
                                                  static_cast<cudaStream_t>(stream)));
}

}  // namespace cuda
}  // namespace fastscale
