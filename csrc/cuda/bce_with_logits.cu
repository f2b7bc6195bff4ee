// bce_with_logits: mean binary cross-entropy on logits and its gradient, in one pass.
//
//   loss_i = max(z, 0) - z*y + log1p(exp(-|z|))      (never exp of a positive number)
//   dz_i   = (sigmoid(z) - y) / N                    (sigmoid from the same exp(-|z|))
//
// The loss is summed in float64: a fixed grid (its size depends only on N) of grid-stride
// blocks, each reducing its threads' sums in shared memory in a fixed tree, writes one
// partial; a second one-block kernel adds the partials in the same fixed way and writes
// the mean into the caller's result word.  No atomics on the sum: bitwise reproducible.
// A target outside [0, 1] (NaN included) is reported in the error word (first position);
// Python reads the loss and the word together, its one synchronisation (it needs the loss
// as a float anyway).
#include "common.cuh"
#include "launchers.h"

namespace fastscale {
namespace cuda {
namespace {

const char* const OP = "bce_with_logits";
constexpr int THREADS = 256;
constexpr i64 MAX_BLOCKS = 1024;

i64 grid_for(i64 N) {
  i64 b = (N + THREADS * 4 - 1) / (THREADS * 4);
  if (b < 1) b = 1;
  return b < MAX_BLOCKS ? b : MAX_BLOCKS;
}

__device__ __forceinline__ double block_sum(double v, double* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int w = THREADS / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
    __syncthreads();
  }
  return sh[0];
}

template <class T>
__global__ void __launch_bounds__(THREADS) partial_kernel(const T* __restrict__ z, const T* __restrict__ y, i64 N,
                                                          T* __restrict__ g, double* __restrict__ part, u64* err,
                                                          u64 tag) {
  __shared__ double sh[THREADS];
  const T n = static_cast<T>(N);
  double acc = 0.0;
  for (i64 i = static_cast<i64>(blockIdx.x) * THREADS + threadIdx.x; i < N; i += static_cast<i64>(gridDim.x) * THREADS) {
    const T zi = z[i], yi = y[i];
    if (!(yi >= T(0) && yi <= T(1))) report(err, tag, 0, i, ERR_TARGET);
    const T ex = exp(-fabs(zi));
    acc += static_cast<double>(zi > T(0) ? zi : T(0)) - static_cast<double>(zi) * static_cast<double>(yi) +
           static_cast<double>(log1p(ex));
    const T sig = zi >= T(0) ? T(1) / (T(1) + ex) : ex / (T(1) + ex);
    g[i] = (sig - yi) / n;
  }
  const double s = block_sum(acc, sh);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void __launch_bounds__(THREADS) final_kernel(const double* __restrict__ part, int nparts, i64 N,
                                                        double* __restrict__ result) {
  __shared__ double sh[THREADS];
  double acc = 0.0;
  for (int i = threadIdx.x; i < nparts; i += THREADS) acc += part[i];
  const double s = block_sum(acc, sh);
  if (threadIdx.x == 0) *result = s / static_cast<double>(N);
}

}  // namespace

i64 bce_workspace_bytes(i64 N) { return grid_for(N) * static_cast<i64>(sizeof(double)); }

void bce_with_logits(up logits, up targets, up dlogits, i64 N, int fsize, up ws, i64 ws_bytes, up result, up err,
                     u64 tag, up stream) {
  need(err != 0 && result != 0, OP, "an error word and a result word are required");
  need(N > 0, OP, "N must be positive");
  const i64 blocks = grid_for(N);
  need(ws != 0 && ws_bytes >= blocks * static_cast<i64>(sizeof(double)), OP, "workspace too small");
  cudaStream_t s = as_stream(stream);
  with_float(fsize, OP, [&](auto tt) {
    using T = decltype(tt);
    FS_LAUNCH(static_cast<unsigned>(blocks), THREADS, 0, s, partial_kernel<T>)(
        as_ptr<const T>(logits), as_ptr<const T>(targets), N, as_ptr<T>(dlogits), as_ptr<double>(ws),
        as_ptr<u64>(err), tag);
  });
  FS_CUDA_LAUNCHED(OP);
  FS_LAUNCH(1, THREADS, 0, s, final_kernel)(as_ptr<const double>(ws), static_cast<int>(blocks), N,
                                            as_ptr<double>(result));
  FS_CUDA_LAUNCHED(OP);
}

}  // namespace cuda
}  // namespace fastscale
