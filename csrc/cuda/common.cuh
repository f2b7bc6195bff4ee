// Shared pieces of the CUDA kernels: error checking that names op and file:line, and the
// stream type every launcher takes (CuPy's current stream, passed as an integer).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastscale {
namespace cuda {

using i64 = std::int64_t;

[[noreturn]] inline void fail(const char* op, cudaError_t err, const char* file, int line) {
  throw std::runtime_error(std::string(op) + ": CUDA error " + cudaGetErrorName(err) + " (" +
                           cudaGetErrorString(err) + ") at " + file + ":" + std::to_string(line));
}

#define FS_CUDA_CHECK(op, expr)                                         \
  do {                                                                  \
    cudaError_t fs_err_ = (expr);                                       \
    if (fs_err_ != cudaSuccess) ::fastscale::cuda::fail(op, fs_err_, __FILE__, __LINE__); \
  } while (0)

int device_count();
std::string device_name(int device);
int runtime_version();

}  // namespace cuda
}  // namespace fastscale
