// embedding: out[p] = weight[ids[p]] and its gradient (dense (V, D) or unique sorted rows).
//
// Forward: one warp per position (grid-stride), lanes over 16-byte vectors of the row
// (float4 / double2 when D * sizeof(T) is a multiple of 16 and the arrays are aligned,
// scalars otherwise), index * D in 64 bits.  A bad id is reported in the error word and
// its row is not read.
//
// Backward: deterministic by default (segment.cuh: sort positions by id, reduce each row's
// segment in position order); `deterministic=false` is the opt-in atomic variant
// (validate, zero, atomicAdd), whose float sums depend on the order atomics land.
#include "common.cuh"
#include "launchers.h"
#include "segment.cuh"

namespace fastscale {
namespace cuda {
namespace {

const char* const OP = "embedding";
const char* const OPB = "embedding_backward";

template <class T, class VT, class I, int NV>
__global__ void __launch_bounds__(256) forward_kernel(const T* __restrict__ weight, i64 V, i64 D,
                                                      const I* __restrict__ ids, i64 N, T* __restrict__ out,
                                                      u64* err, u64 tag) {
  constexpr int L = VT::L;
  const int lane = threadIdx.x & 31;
  const i64 units = D / L;
  const i64 nwarps = static_cast<i64>(gridDim.x) * WARPS_PER_BLOCK;
  for (i64 p = static_cast<i64>(blockIdx.x) * WARPS_PER_BLOCK + (threadIdx.x >> 5); p < N; p += nwarps) {
    const i64 id = static_cast<i64>(__ldg(ids + p));
    if (id < 0 || id >= V) {
      if (lane == 0) report(err, tag, 0, p, ERR_ID);
      continue;
    }
    const T* row = weight + id * D;
    T* o = out + p * D;
    for (i64 u0 = 0; u0 < units; u0 += 32 * NV) {
      VT x[NV];
#pragma unroll
      for (int v = 0; v < NV; ++v) {
        const i64 u = u0 + v * 32 + lane;
        if (u < units) x[v] = VT::load(row + u * L);
      }
#pragma unroll
      for (int v = 0; v < NV; ++v) {
        const i64 u = u0 + v * 32 + lane;
        if (u < units) x[v].store(o + u * L);
      }
    }
  }
}

// Validates ids; with WRITE also fills the sort input (key = id, or V for a bad id).
template <class I, bool WRITE>
__global__ void prep_kernel(const I* __restrict__ ids, i64 N, i64 V, unsigned* __restrict__ keys,
                            unsigned* __restrict__ pos, u64* err, u64 tag) {
  for (i64 p = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; p < N;
       p += static_cast<i64>(gridDim.x) * blockDim.x) {
    const i64 id = static_cast<i64>(ids[p]);
    const bool ok = id >= 0 && id < V;
    if (!ok) report(err, tag, 0, p, ERR_ID);
    if (WRITE) {
      keys[p] = ok ? static_cast<unsigned>(id) : static_cast<unsigned>(V);
      pos[p] = static_cast<unsigned>(p);
    }
  }
}

// Opt-in atomic backward: one warp per position adds dout[p] into grad[ids[p]].
template <class T, class I>
__global__ void __launch_bounds__(256) atomic_kernel(const T* __restrict__ dout, i64 D, const I* __restrict__ ids,
                                                     i64 N, T* __restrict__ grad, const u64* err) {
  if (failed(err)) return;
  const int lane = threadIdx.x & 31;
  const i64 nwarps = static_cast<i64>(gridDim.x) * WARPS_PER_BLOCK;
  for (i64 p = static_cast<i64>(blockIdx.x) * WARPS_PER_BLOCK + (threadIdx.x >> 5); p < N; p += nwarps) {
    const i64 id = static_cast<i64>(ids[p]);
    T* r = grad + id * D;
    const T* g = dout + p * D;
    for (i64 j = lane; j < D; j += 32) atomicAdd(r + j, g[j]);
  }
}

}  // namespace

void embedding_forward(up weight, up ids, up out, i64 V, i64 D, i64 N, int fsize, int isize, up err, u64 tag,
                       up stream) {
  need(err != 0, OP, "an error word is required");
  if (N == 0) return;
  cudaStream_t s = as_stream(stream);
  const unsigned grid = blocks_for(N, WARPS_PER_BLOCK, 132 * 64);
  with_float(fsize, OP, [&](auto tt) {
    using T = decltype(tt);
    with_index(isize, OP, [&](auto ii) {
      using I = decltype(ii);
      auto run = [&](auto vt) {
        using VT = decltype(vt);
        with_nv(D / VT::L, [&](auto nv) {
          FS_LAUNCH(grid, 256, 0, s, forward_kernel<T, VT, I, decltype(nv)::value>)(
              as_ptr<const T>(weight), V, D, as_ptr<const I>(ids), N, as_ptr<T>(out), as_ptr<u64>(err), tag);
        });
      };
      if (vec_ok(D, sizeof(T), {weight, out})) run(Vec<T>{});
      else run(Vec1<T>{});
    });
  });
  FS_CUDA_LAUNCHED(OP);
}

i64 embedding_backward_workspace(i64 N, i64 V, int fsize, bool sparse) {
  seg_limits(OPB, N, V, 0);
  return seg_layout(N, V, fsize, false, sparse).total;
}

void embedding_backward_dense(up dout, up ids, up grad, i64 V, i64 D, i64 N, int fsize, int isize,
                              bool deterministic, up ws, i64 ws_bytes, up err, u64 tag, up stream) {
  need(err != 0, OPB, "an error word is required");
  cudaStream_t s = as_stream(stream);
  u64* e = as_ptr<u64>(err);
  with_float(fsize, OPB, [&](auto tt) {
    using T = decltype(tt);
    with_index(isize, OPB, [&](auto ii) {
      using I = decltype(ii);
      if (!deterministic) {
        if (N > 0) {
          FS_LAUNCH(stride_blocks(N), 256, 0, s, prep_kernel<I, false>)(as_ptr<const I>(ids), N, V, nullptr, nullptr,
                                                                        e, tag);
          FS_CUDA_LAUNCHED(OPB);
        }
        if (V * D > 0) {
          FS_LAUNCH(stride_blocks(V * D), 256, 0, s, zero_kernel<T>)(as_ptr<T>(grad), V * D, e);
          FS_CUDA_LAUNCHED(OPB);
        }
        if (N > 0 && D > 0) {
          FS_LAUNCH(blocks_for(N, WARPS_PER_BLOCK, 132 * 64), 256, 0, s, atomic_kernel<T, I>)(
              as_ptr<const T>(dout), D, as_ptr<const I>(ids), N, as_ptr<T>(grad), e);
          FS_CUDA_LAUNCHED(OPB);
        }
        return;
      }
      seg_limits(OPB, N, V, 0);
      const SegPtrs p = seg_ptrs(ws, ws_bytes, seg_layout(N, V, fsize, false, false), OPB);
      if (N > 0) {
        FS_LAUNCH(stride_blocks(N), 256, 0, s, prep_kernel<I, true>)(as_ptr<const I>(ids), N, V, p.keys_in, p.pos_in,
                                                                     e, tag);
        FS_CUDA_LAUNCHED(OPB);
      }
      if (V == 0) return;
      seg_dense<T, false>(OPB, as_ptr<const T>(dout), D, p, N, as_ptr<T>(grad), V, e, s,
                          vec_ok(D, sizeof(T), {dout, grad}));
    });
  });
}

void embedding_backward_rows(up ids, up rows, up count, i64 V, i64 N, int isize, up ws, i64 ws_bytes, up err,
                             u64 tag, up stream) {
  need(err != 0 && count != 0, OPB, "an error word and a count word are required");
  seg_limits(OPB, N, V, 0);
  cudaStream_t s = as_stream(stream);
  // The layout must match the one embedding_backward_values sees: fsize does not enter it
  // without bags, so 4 stands for either dtype.
  const SegPtrs p = seg_ptrs(ws, ws_bytes, seg_layout(N, V, 4, false, true), OPB);
  with_index(isize, OPB, [&](auto ii) {
    using I = decltype(ii);
    if (N > 0) {
      FS_LAUNCH(stride_blocks(N), 256, 0, s, prep_kernel<I, true>)(as_ptr<const I>(ids), N, V, p.keys_in, p.pos_in,
                                                                   as_ptr<u64>(err), tag);
      FS_CUDA_LAUNCHED(OPB);
    }
  });
  seg_rows(OPB, p, N, V, as_ptr<i64>(rows), as_ptr<i64>(count), s);
}

void embedding_backward_values(up dout, up values, i64 V, i64 D, i64 N, i64 U, int fsize, up ws, i64 ws_bytes,
                               up count, up err, up stream) {
  const SegPtrs p = seg_ptrs(ws, ws_bytes, seg_layout(N, V, 4, false, true), OPB);
  cudaStream_t s = as_stream(stream);
  with_float(fsize, OPB, [&](auto tt) {
    using T = decltype(tt);
    seg_values<T, false>(OPB, as_ptr<const T>(dout), D, p, U, as_ptr<const i64>(count), as_ptr<T>(values),
                         as_ptr<const u64>(err), s,
                         vec_ok(D, sizeof(T), {dout, values}));
  });
}

}  // namespace cuda
}  // namespace fastscale
