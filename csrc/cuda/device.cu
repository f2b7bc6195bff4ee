// Device queries used by fastscale.backends() and `python -m fastscale info`.
#include "common.cuh"

namespace fastscale {
namespace cuda {

int device_count() {
  int n = 0;
  // No driver or no device is "zero devices", not an error: the backend then reports why.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::string device_name(int device) {
  cudaDeviceProp prop;
  FS_CUDA_CHECK("device_name", cudaGetDeviceProperties(&prop, device));
  return std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ")";
}

int runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

}  // namespace cuda
}  // namespace fastscale
