// The deterministic backward of embedding and embedding_bag, as PyTorch does it: give each
// id position a key (its id, or V for padding / bad ids, which sorts last) and sort the
// (key, position) pairs stably with CUB; each row's gradient is then a segment of the sorted
// positions, reduced by one warp in position order.  No atomics, so the result is bitwise
// the same on every run.
//
// Dense gradient: one warp per table row finds its segment by binary search in the sorted
// keys and writes the row (zeros when the row was not touched).  Sparse gradient: segment
// heads are scanned into slots, giving the unique sorted rows and their count U in a device
// word; then one warp per unique row reduces its segment into values[u].  The caller either
// reads U back to size values exactly (one synchronisation), or sizes values for every id
// and passes the word on, to this kernel and to sparse_adam_step (none).
//
// Per position p the reduction needs the dout row (bag[p], or p itself for embedding) and a
// coefficient (per-sample weight times 1/count for mean; 1 for embedding).
#pragma once

#include "common.cuh"
#include "launchers.h"

namespace fastscale {
namespace cuda {

constexpr unsigned FULL = 0xffffffffu;

// Workspace carved from one byte buffer Python allocates (256-byte aligned pieces).
struct SegLayout {
  i64 keys_in = 0, keys_out = 0, pos_in = 0, pos_out = 0, coef = 0, bag = 0, head = 0, scan = 0, seg = 0, temp = 0;
  i64 temp_bytes = 0, total = 0;
};

inline SegLayout seg_layout(i64 N, i64 V, int fsize, bool bags, bool sparse) {
  auto al = [](i64 x) { return (x + 255) / 256 * 256; };
  SegLayout L;
  i64 off = 0;
  auto take = [&](i64 bytes) {
    const i64 at = off;
    off += al(bytes > 0 ? bytes : 1);
    return at;
  };
  L.keys_in = take(4 * N);
  L.keys_out = take(4 * N);
  L.pos_in = take(4 * N);
  L.pos_out = take(4 * N);
  if (bags) {
    L.coef = take(static_cast<i64>(fsize) * N);
    L.bag = take(4 * N);
  }
  if (sparse) {
    L.head = take(4 * N);
    L.scan = take(4 * N);
    L.seg = take(4 * (N + 1));
  }
  L.temp_bytes = segment_temp_bytes(N, bits_for(static_cast<u64>(V)));
  L.temp = take(L.temp_bytes);
  L.total = off;
  return L;
}

// Limits of the u32 keys / positions / bag numbers (CUB also counts items in int).
inline void seg_limits(const char* op, i64 N, i64 V, i64 B) {
  if (N > 0x7ffffffe) bad_arg(op, "the cuda backend takes at most 2**31 - 2 ids per call; split the batch");
  if (V > 0xfffffffeLL) bad_arg(op, "the cuda backend takes tables of at most 2**32 - 2 rows");
  if (B > 0xfffffffeLL) bad_arg(op, "the cuda backend takes at most 2**32 - 2 bags per call");
}

struct SegPtrs {
  unsigned *keys_in, *keys_out, *pos_in, *pos_out, *bag, *head, *scan, *seg;
  void* coef;
  void* temp;
  i64 temp_bytes;
};

inline SegPtrs seg_ptrs(up ws, i64 ws_bytes, const SegLayout& L, const char* op) {
  if (ws == 0 || ws_bytes < L.total) bad_arg(op, "workspace too small (size it with the *_workspace function)");
  char* base = reinterpret_cast<char*>(ws);
  auto at = [&](i64 off) { return reinterpret_cast<unsigned*>(base + off); };
  SegPtrs p;
  p.keys_in = at(L.keys_in);
  p.keys_out = at(L.keys_out);
  p.pos_in = at(L.pos_in);
  p.pos_out = at(L.pos_out);
  p.bag = L.bag ? at(L.bag) : nullptr;
  p.coef = L.coef ? static_cast<void*>(base + L.coef) : nullptr;
  p.head = L.head ? at(L.head) : nullptr;
  p.scan = L.scan ? at(L.scan) : nullptr;
  p.seg = L.seg ? at(L.seg) : nullptr;
  p.temp = base + L.temp;
  p.temp_bytes = L.temp_bytes;
  return p;
}

#ifdef FS_DEVICE_CODE
__device__ __forceinline__ i64 lower_bound_u32(const unsigned* a, i64 n, unsigned x) {
  i64 lo = 0, hi = n;
  while (lo < hi) {
    const i64 mid = (lo + hi) >> 1;
    if (__ldg(a + mid) < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// dst[0:D] = sum over sorted entries k in [lo, hi) of coef[p] * dout[bag[p]] (p = pos[k]),
// in k order.  The warp loads 32 entries at a time and broadcasts them with shuffles; each
// lane owns NV vectors of every column chunk.
template <class T, class VT, int NV, bool BAG>
__device__ __forceinline__ void reduce_segment(const T* __restrict__ dout, i64 D, const unsigned* __restrict__ pos,
                                               const unsigned* __restrict__ bag, const T* __restrict__ coef, i64 lo,
                                               i64 hi, T* __restrict__ dst, int lane) {
  constexpr int L = VT::L;
  const i64 units = D / L;
  for (i64 u0 = 0; u0 < units; u0 += 32 * NV) {
    VT acc[NV];
#pragma unroll
    for (int v = 0; v < NV; ++v) acc[v] = VT::zero();
    for (i64 k0 = lo; k0 < hi; k0 += 32) {
      const i64 k = k0 + lane;
      unsigned src = 0;
      T c = T(1);
      if (k < hi) {
        const unsigned p = __ldg(pos + k);
        src = BAG ? __ldg(bag + p) : p;
        if (BAG) c = __ldg(coef + p);
      }
      const int cnt = static_cast<int>(hi - k0 < 32 ? hi - k0 : 32);
#pragma unroll 4
      for (int j = 0; j < cnt; ++j) {
        const unsigned sj = __shfl_sync(FULL, src, j);
        const T cj = BAG ? __shfl_sync(FULL, c, j) : T(1);
        const T* row = dout + static_cast<i64>(sj) * D;
#pragma unroll
        for (int v = 0; v < NV; ++v) {
          const i64 u = u0 + v * 32 + lane;
          if (u < units) {
            if (BAG) acc[v].add(VT::load(row + u * L), cj);
            else acc[v].add(VT::load(row + u * L));
          }
        }
      }
    }
#pragma unroll
    for (int v = 0; v < NV; ++v) {
      const i64 u = u0 + v * 32 + lane;
      if (u < units) acc[v].store(dst + u * L);
    }
  }
}

// grad (V, D): one warp per row; rows without entries (and the padding row, whose entries
// carry key V) come out zero.  Skips everything when the ids check failed.
template <class T, class VT, int NV, bool BAG>
__global__ void __launch_bounds__(256) seg_dense_kernel(const T* __restrict__ dout, i64 D,
                                                        const unsigned* __restrict__ keys,
                                                        const unsigned* __restrict__ pos,
                                                        const unsigned* __restrict__ bag, const T* __restrict__ coef,
                                                        i64 M, T* __restrict__ grad, i64 V, const u64* err) {
  if (failed(err)) return;
  const i64 r = static_cast<i64>(blockIdx.x) * WARPS_PER_BLOCK + (threadIdx.x >> 5);
  if (r >= V) return;
  const i64 lo = lower_bound_u32(keys, M, static_cast<unsigned>(r));
  const i64 hi = lo + lower_bound_u32(keys + lo, M - lo, static_cast<unsigned>(r + 1));
  reduce_segment<T, VT, NV, BAG>(dout, D, pos, bag, coef, lo, hi, grad + r * D, threadIdx.x & 31);
}

// values (U, D): one warp per unique row u, segment [seg[u], seg[u+1]).  With `count` (the
// rows step's device word) U is only a bound (the number of ids) and *count rows are reduced,
// so the caller needs no read-back; a failed ids check (err) skips everything, since the
// segments then come from stale workspace.
template <class T, class VT, int NV, bool BAG>
__global__ void __launch_bounds__(256) seg_values_kernel(const T* __restrict__ dout, i64 D,
                                                         const unsigned* __restrict__ pos,
                                                         const unsigned* __restrict__ bag, const T* __restrict__ coef,
                                                         const unsigned* __restrict__ seg, i64 U,
                                                         const i64* __restrict__ count, T* __restrict__ values,
                                                         const u64* err) {
  if (failed(err)) return;
  const i64 u = static_cast<i64>(blockIdx.x) * WARPS_PER_BLOCK + (threadIdx.x >> 5);
  if (u >= (count && *count < U ? *count : U)) return;
  reduce_segment<T, VT, NV, BAG>(dout, D, pos, bag, coef, seg[u], seg[u + 1], values + u * D, threadIdx.x & 31);
}

// head[i] = 1 where a new kept row starts in the sorted keys.
static __global__ void seg_heads_kernel(const unsigned* __restrict__ keys, i64 M, unsigned V, unsigned* __restrict__ head) {
  for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < M;
       i += static_cast<i64>(gridDim.x) * blockDim.x) {
    const unsigned k = keys[i];
    head[i] = (k < V && (i == 0 || keys[i - 1] != k)) ? 1u : 0u;
  }
}

// From the inclusive scan of heads: rows[u] (int64), seg[u] = first sorted entry of row u,
// seg[U] = end of the kept entries, *count = U (the caller zeroed it).
static __global__ void seg_rows_kernel(const unsigned* __restrict__ keys, const unsigned* __restrict__ head,
                                const unsigned* __restrict__ scan, i64 M, unsigned V, i64* __restrict__ rows,
                                unsigned* __restrict__ seg, i64* __restrict__ count) {
  for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < M;
       i += static_cast<i64>(gridDim.x) * blockDim.x) {
    const unsigned k = keys[i];
    if (k >= V) continue;
    if (head[i]) {
      rows[scan[i] - 1] = static_cast<i64>(k);
      seg[scan[i] - 1] = static_cast<unsigned>(i);
    }
    if (i + 1 == M || keys[i + 1] >= V) {  // the last kept entry
      seg[scan[i]] = static_cast<unsigned>(i + 1);
      *count = static_cast<i64>(scan[i]);
    }
  }
}

template <class T>
__global__ void zero_kernel(T* __restrict__ a, i64 n, const u64* err) {
  if (failed(err)) return;
  for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<i64>(gridDim.x) * blockDim.x)
    a[i] = T(0);
}
#endif  // FS_DEVICE_CODE

// Grid for grid-stride elementwise kernels: enough blocks to fill an H200 several times.
inline unsigned stride_blocks(i64 n, int threads = 256) { return blocks_for(n, threads, 132 * 16); }

#ifdef FS_DEVICE_CODE
// Sort + (dense: per-row reduce | sparse: heads, scan, rows) after the caller's prep
// kernel filled keys_in / pos_in (and bag / coef).  Host side, all on `stream`.
template <class T, bool BAG>
void seg_dense(const char* op, const T* dout, i64 D, const SegPtrs& p, i64 M, T* grad, i64 V, const u64* err,
               cudaStream_t stream, bool vec) {
  sort_pairs_u32(p.temp, p.temp_bytes, p.keys_in, p.keys_out, p.pos_in, p.pos_out, M, bits_for(static_cast<u64>(V)),
                 stream, op);
  auto run = [&](auto vt) {
    using VT = decltype(vt);
    with_nv(D / VT::L, [&](auto nv) {
      FS_LAUNCH(blocks_for(V, WARPS_PER_BLOCK), 256, 0, stream, seg_dense_kernel<T, VT, decltype(nv)::value, BAG>)(
          dout, D, p.keys_out, p.pos_out, p.bag, static_cast<const T*>(p.coef), M, grad, V, err);
    });
  };
  if (vec) run(Vec<T>{});
  else run(Vec1<T>{});
  FS_CUDA_LAUNCHED(op);
}

static inline void seg_rows(const char* op, const SegPtrs& p, i64 M, i64 V, i64* rows, i64* count, cudaStream_t stream) {
  FS_CUDA_CHECK(op, cudaMemsetAsync(count, 0, sizeof(i64), stream));
  if (M == 0) return;
  sort_pairs_u32(p.temp, p.temp_bytes, p.keys_in, p.keys_out, p.pos_in, p.pos_out, M, bits_for(static_cast<u64>(V)),
                 stream, op);
  FS_LAUNCH(stride_blocks(M), 256, 0, stream, seg_heads_kernel)(p.keys_out, M, static_cast<unsigned>(V), p.head);
  FS_CUDA_LAUNCHED(op);
  inclusive_sum_u32(p.temp, p.temp_bytes, p.head, p.scan, M, stream, op);
  FS_LAUNCH(stride_blocks(M), 256, 0, stream, seg_rows_kernel)(p.keys_out, p.head, p.scan, M,
                                                               static_cast<unsigned>(V), rows, p.seg, count);
  FS_CUDA_LAUNCHED(op);
}

template <class T, bool BAG>
void seg_values(const char* op, const T* dout, i64 D, const SegPtrs& p, i64 U, const i64* count, T* values,
                const u64* err, cudaStream_t stream, bool vec) {
  if (U == 0 || D == 0) return;
  auto run = [&](auto vt) {
    using VT = decltype(vt);
    with_nv(D / VT::L, [&](auto nv) {
      FS_LAUNCH(blocks_for(U, WARPS_PER_BLOCK), 256, 0, stream, seg_values_kernel<T, VT, decltype(nv)::value, BAG>)(
          dout, D, p.pos_out, p.bag, static_cast<const T*>(p.coef), p.seg, U, count, values, err);
    });
  };
  if (vec) run(Vec<T>{});
  else run(Vec1<T>{});
  FS_CUDA_LAUNCHED(op);
}
#endif  // FS_DEVICE_CODE

}  // namespace cuda
}  // namespace fastscale
