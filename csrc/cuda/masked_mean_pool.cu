// masked_mean_pool: out[b] = mean of x[b, t] over the t where mask[b, t]; zeros for an
// all-false row.  Masked-out positions are never read, so a NaN or inf there cannot leak.
//
// Forward: a block per (bag, 32-vector column tile); its 8 warps take every 8th position
// and keep a 16-byte vector (or scalar) accumulator per lane; the 8 partial sums are added
// in warp order through shared memory (fixed order: deterministic).  Backward: one kernel
// counts each row's mask, one writes dx[b, t] = mask ? dout[b] / count : 0 with one warp
// per (b, t) row.
#include "common.cuh"
#include "launchers.h"

namespace fastscale {
namespace cuda {
namespace {

const char* const OP = "masked_mean_pool";
const char* const OPB = "masked_mean_pool_backward";
constexpr unsigned FULLMASK = 0xffffffffu;

template <class T, class VT>
__global__ void __launch_bounds__(256) forward_kernel(const T* __restrict__ x, const unsigned char* __restrict__ mask,
                                                      T* __restrict__ out, i64 Tn, i64 D) {
  constexpr int L = VT::L;
  __shared__ VT part[WARPS_PER_BLOCK][32];
  __shared__ i64 cnt[WARPS_PER_BLOCK];
  const i64 b = blockIdx.x;
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const i64 units = D / L;
  const i64 u = static_cast<i64>(blockIdx.y) * 32 + lane;
  VT acc = VT::zero();
  i64 n = 0;
  const unsigned char* mrow = mask + b * Tn;
  for (i64 t = w; t < Tn; t += WARPS_PER_BLOCK) {
    if (mrow[t]) {
      ++n;
      if (u < units) acc.add(VT::load(x + (b * Tn + t) * D + u * L));
    }
  }
  part[w][lane] = acc;
  if (lane == 0) cnt[w] = n;
  __syncthreads();
  if (w != 0 || u >= units) return;
  VT s = part[0][lane];
  i64 total = cnt[0];
#pragma unroll
  for (int k = 1; k < WARPS_PER_BLOCK; ++k) {
    s.add(part[k][lane]);
    total += cnt[k];
  }
  // sum / max(count, 1), as the numpy backend divides: an all-false row is 0 / 1 = 0.
  const T c = static_cast<T>(total > 0 ? total : 1);
#pragma unroll
  for (int i = 0; i < L; ++i) s.v[i] = s.v[i] / c;
  s.store(out + b * D + u * L);
}

// count[b] = max(number of true entries in mask[b], 1), as T.  One warp per row.
template <class T>
__global__ void __launch_bounds__(256) count_kernel(const unsigned char* __restrict__ mask, i64 B, i64 Tn,
                                                    T* __restrict__ count) {
  const i64 b = static_cast<i64>(blockIdx.x) * WARPS_PER_BLOCK + (threadIdx.x >> 5);
  if (b >= B) return;
  const int lane = threadIdx.x & 31;
  i64 n = 0;
  for (i64 t = lane; t < Tn; t += 32) n += mask[b * Tn + t] ? 1 : 0;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) n += __shfl_down_sync(FULLMASK, n, o);
  if (lane == 0) count[b] = static_cast<T>(n > 0 ? n : 1);
}

template <class T, class VT>
__global__ void __launch_bounds__(256) backward_kernel(const T* __restrict__ dout,
                                                       const unsigned char* __restrict__ mask,
                                                       const T* __restrict__ count, T* __restrict__ dx, i64 Tn,
                                                       i64 rows, i64 D) {
  constexpr int L = VT::L;
  const int lane = threadIdx.x & 31;
  const i64 units = D / L;
  const i64 nwarps = static_cast<i64>(gridDim.x) * WARPS_PER_BLOCK;
  for (i64 r = static_cast<i64>(blockIdx.x) * WARPS_PER_BLOCK + (threadIdx.x >> 5); r < rows; r += nwarps) {
    const i64 b = r / Tn;
    T* o = dx + r * D;
    if (mask[r]) {
      const T c = count[b];
      const T* g = dout + b * D;
      for (i64 u = lane; u < units; u += 32) {
        VT v = VT::load(g + u * L);
#pragma unroll
        for (int i = 0; i < L; ++i) v.v[i] = v.v[i] / c;
        v.store(o + u * L);
      }
    } else {
      const VT z = VT::zero();
      for (i64 u = lane; u < units; u += 32) z.store(o + u * L);
    }
  }
}

}  // namespace

void masked_mean_pool_forward(up x, up mask, up out, i64 B, i64 T, i64 D, int fsize, up stream) {
  if (B == 0 || D == 0) return;
  cudaStream_t s = as_stream(stream);
  with_float(fsize, OP, [&](auto tt) {
    using TT = decltype(tt);
    auto run = [&](auto vt) {
      using VT = decltype(vt);
      const i64 tiles = (D / VT::L + 31) / 32;
      need(tiles <= 65535, OP, "D is too large for the cuda kernel's grid");
      need(B <= 0x7fffffff, OP, "B is too large for the cuda kernel's grid");
      dim3 grid(static_cast<unsigned>(B), static_cast<unsigned>(tiles));
      FS_LAUNCH(grid, 256, 0, s, forward_kernel<TT, VT>)(as_ptr<const TT>(x), as_ptr<const unsigned char>(mask),
                                                         as_ptr<TT>(out), T, D);
    };
    if (vec_ok(D, sizeof(TT), {x, out})) run(Vec<TT>{});
    else run(Vec1<TT>{});
  });
  FS_CUDA_LAUNCHED(OP);
}

void masked_mean_pool_backward(up dout, up mask, up dx, up scale, i64 B, i64 T, i64 D, int fsize, up stream) {
  if (B == 0 || T == 0 || D == 0) return;
  need(scale != 0, OPB, "a count scratch of B elements is required");
  cudaStream_t s = as_stream(stream);
  with_float(fsize, OPB, [&](auto tt) {
    using TT = decltype(tt);
    FS_LAUNCH(blocks_for(B, WARPS_PER_BLOCK), 256, 0, s, count_kernel<TT>)(as_ptr<const unsigned char>(mask), B, T,
                                                                           as_ptr<TT>(scale));
    FS_CUDA_LAUNCHED(OPB);
    auto run = [&](auto vt) {
      using VT = decltype(vt);
      FS_LAUNCH(blocks_for(B * T, WARPS_PER_BLOCK, 132 * 64), 256, 0, s, backward_kernel<TT, VT>)(
          as_ptr<const TT>(dout), as_ptr<const unsigned char>(mask), as_ptr<const TT>(scale), as_ptr<TT>(dx), T,
          B * T, D);
    };
    if (vec_ok(D, sizeof(TT), {dout, dx})) run(Vec<TT>{});
    else run(Vec1<TT>{});
  });
  FS_CUDA_LAUNCHED(OPB);
}

}  // namespace cuda
}  // namespace fastscale
