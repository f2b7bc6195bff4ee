// embedding_bag: per bag, the sum or mean of weight rows (optionally weighted per id),
// skipping padding_idx, without materialising (B, T, D).  Bags are CSR (ids (N,) + offsets
// (B+1,)) or padded rows (ids (B, T)).
//
// CSR offsets are validated first by their own kernel (first entry that breaks "starts at
// 0, never decreases, ends at N", as the CPU reports it); every later kernel of the call
// skips when that failed, so no kernel ever reads a range taken from bad offsets.
//
// Forward: one warp per bag.  The warp loads 32 ids (and per-sample weights) at a time,
// coalesced, validates them, takes a ballot of the kept ones (not padding, in range) and
// broadcasts each kept id with a shuffle; every lane then adds its 16-byte vectors (float4
// / double2; a scalar path when rows are not 16-byte multiples or not aligned) of that row
// into registers.  The count for mean comes from the same ballots.  index * D is 64-bit.
//
// Backward: deterministic by default (segment.cuh: prep writes per position the key (id,
// or V for padding / bad ids), the bag and the coefficient psw * 1/count; then sort and
// segment-reduce); `deterministic=false` is the opt-in atomic variant (validate, zero,
// atomicAdd per bag).
#include "common.cuh"
#include "launchers.h"
#include "segment.cuh"

namespace fastscale {
namespace cuda {
namespace {

const char* const OP = "embedding_bag";
const char* const OPB = "embedding_bag_backward";

// Offsets (B+1,): report the first position that breaks the CSR rules (prio 0: before ids).
template <class O>
__global__ void offsets_kernel(const O* __restrict__ off, i64 B, i64 N, u64* err, u64 tag) {
  for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i <= B;
       i += static_cast<i64>(gridDim.x) * blockDim.x) {
    const i64 o = static_cast<i64>(off[i]);
    bool bad;
    if (i == 0) bad = o != 0;
    else bad = o < static_cast<i64>(off[i - 1]) || o > N;
    if (i == B) bad = bad || o != N;
    if (bad) report(err, tag, 0, i, ERR_OFFSET);
  }
}

template <class T, class VT, class I, class O, int NV>
__global__ void __launch_bounds__(256) forward_kernel(const T* __restrict__ weight, i64 V, i64 D, Bags<I, O> bags,
                                                      i64 B, const T* __restrict__ psw, i64 pad, bool mean,
                                                      T* __restrict__ out, u64* err, u64 tag) {
  if (failed_before(err, tag | (u64(1) << 46))) return;  // bad offsets (prio 0) or an earlier call
  const i64 b = static_cast<i64>(blockIdx.x) * WARPS_PER_BLOCK + (threadIdx.x >> 5);
  if (b >= B) return;
  constexpr int L = VT::L;
  const int lane = threadIdx.x & 31;
  const i64 s = bags.begin(b), e = bags.end(b);
  const i64 units = D / L;
  // At least one pass, so ids are validated (and the count taken) even when D == 0.
  for (i64 u0 = 0; u0 == 0 || u0 < units; u0 += 32 * NV) {
    VT acc[NV];
#pragma unroll
    for (int v = 0; v < NV; ++v) acc[v] = VT::zero();
    i64 n = 0;
    for (i64 k0 = s; k0 < e; k0 += 32) {
      const i64 k = k0 + lane;
      i64 id = 0;
      T c = T(1);
      bool use = false;
      if (k < e) {
        id = static_cast<i64>(__ldg(bags.ids + k));
        const bool ok = id >= 0 && id < V;
        if (!ok && u0 == 0) report(err, tag, 1, k, ERR_ID);
        use = ok && id != pad;
        if (psw != nullptr && use) c = __ldg(psw + k);
      }
      const unsigned m = __ballot_sync(FULL, use);
      n += __popc(m);
      const int cnt = static_cast<int>(e - k0 < 32 ? e - k0 : 32);
#pragma unroll 4
      for (int j = 0; j < cnt; ++j) {
        const i64 idj = __shfl_sync(FULL, id, j);
        const T cj = __shfl_sync(FULL, c, j);
        if (!((m >> j) & 1u)) continue;
        const T* row = weight + idj * D;
#pragma unroll
        for (int v = 0; v < NV; ++v) {
          const i64 u = u0 + v * 32 + lane;
          if (u < units) acc[v].add(VT::load(row + u * L), cj);
        }
      }
    }
    // An empty (or all-padding) bag is zeros, never 0/0.
    const T scale = mean ? (n > 0 ? T(1) / static_cast<T>(n) : T(0)) : T(1);
#pragma unroll
    for (int v = 0; v < NV; ++v) {
      const i64 u = u0 + v * 32 + lane;
      if (u < units) {
        if (mean) acc[v].scale(scale);
        acc[v].store(out + b * D + u * L);
      }
    }
    if (units == 0) break;
  }
}

// One warp per bag: validate the ids (prio 1, after offsets) and count the kept ones; with
// WRITE fill the sort input: key (id, or V when dropped), position, bag, coefficient.
template <class T, class I, class O, bool WRITE>
__global__ void __launch_bounds__(256) prep_kernel(Bags<I, O> bags, i64 B, i64 V, const T* __restrict__ psw, i64 pad,
                                                   bool mean, unsigned* __restrict__ keys, unsigned* __restrict__ pos,
                                                   unsigned* __restrict__ bag, T* __restrict__ coef, u64* err,
                                                   u64 tag) {
  if (failed_before(err, tag | (u64(1) << 46))) return;  // bad offsets (prio 0) or an earlier call
  const i64 b = static_cast<i64>(blockIdx.x) * WARPS_PER_BLOCK + (threadIdx.x >> 5);
  if (b >= B) return;
  const int lane = threadIdx.x & 31;
  const i64 s = bags.begin(b), e = bags.end(b);
  i64 n = 0;
  for (i64 k0 = s; k0 < e; k0 += 32) {
    const i64 k = k0 + lane;
    bool use = false;
    if (k < e) {
      const i64 id = static_cast<i64>(bags.ids[k]);
      const bool ok = id >= 0 && id < V;
      if (!ok) report(err, tag, 1, k, ERR_ID);
      use = ok && id != pad;
    }
    n += __popc(__ballot_sync(FULL, use));
  }
  if (!WRITE) return;
  const T scale = mean ? (n > 0 ? T(1) / static_cast<T>(n) : T(0)) : T(1);
  for (i64 k = s + lane; k < e; k += 32) {
    const i64 id = static_cast<i64>(bags.ids[k]);
    const bool use = id >= 0 && id < V && id != pad;
    keys[k] = use ? static_cast<unsigned>(id) : static_cast<unsigned>(V);
    pos[k] = static_cast<unsigned>(k);
    bag[k] = static_cast<unsigned>(b);
    coef[k] = psw != nullptr ? psw[k] * scale : scale;
  }
}

// Opt-in atomic backward: one warp per bag adds coef * dout[b] into the rows of its ids.
template <class T, class I, class O>
__global__ void __launch_bounds__(256) atomic_kernel(const T* __restrict__ dout, i64 D, Bags<I, O> bags, i64 B,
                                                     const T* __restrict__ psw, i64 pad, bool mean,
                                                     T* __restrict__ grad, const u64* err) {
  if (failed(err)) return;
  const i64 b = static_cast<i64>(blockIdx.x) * WARPS_PER_BLOCK + (threadIdx.x >> 5);
  if (b >= B) return;
  const int lane = threadIdx.x & 31;
  const i64 s = bags.begin(b), e = bags.end(b);
  T scale = T(1);
  if (mean) {
    i64 n = 0;
    for (i64 k0 = s; k0 < e; k0 += 32) {
      const i64 k = k0 + lane;
      n += __popc(__ballot_sync(FULL, k < e && static_cast<i64>(bags.ids[k]) != pad));
    }
    if (n == 0) return;
    scale = T(1) / static_cast<T>(n);
  }
  const T* g = dout + b * D;
  for (i64 k = s; k < e; ++k) {
    const i64 id = static_cast<i64>(bags.ids[k]);  // validated by prep_kernel
    if (id == pad) continue;
    const T c = psw != nullptr ? psw[k] : scale;
    T* r = grad + id * D;
    for (i64 j = lane; j < D; j += 32) atomicAdd(r + j, c * g[j]);
  }
}

// Calls f(Bags<I, O>) for the id / offsets dtypes; CSR offsets are validated first.
template <class F>
void with_bags(const char* op, up ids, up offsets, i64 B, i64 N, i64 Tlen, int isize, int osize, u64* err, u64 tag,
               cudaStream_t s, F&& f) {
  with_index(isize, op, [&](auto ii) {
    using I = decltype(ii);
    if (offsets == 0) {
      f(Bags<I, I>{as_ptr<const I>(ids), nullptr, Tlen});
      return;
    }
    with_index(osize, op, [&](auto oo) {
      using O = decltype(oo);
      FS_LAUNCH(stride_blocks(B + 1), 256, 0, s, offsets_kernel<O>)(as_ptr<const O>(offsets), B, N, err, tag);
      FS_CUDA_LAUNCHED(op);
      f(Bags<I, O>{as_ptr<const I>(ids), as_ptr<const O>(offsets), 0});
    });
  });
}

}  // namespace

void embedding_bag_forward(up weight, up ids, up offsets, up psw, i64 pad, bool mean, up out, i64 V, i64 D, i64 B,
                           i64 N, i64 Tlen, int fsize, int isize, int osize, up err, u64 tag, up stream) {
  need(err != 0, OP, "an error word is required");
  cudaStream_t s = as_stream(stream);
  u64* e = as_ptr<u64>(err);
  with_float(fsize, OP, [&](auto tt) {
    using T = decltype(tt);
    with_bags(OP, ids, offsets, B, N, Tlen, isize, osize, e, tag, s, [&](auto bags) {
      if (B == 0) return;
      auto run = [&](auto vt) {
        using VT = decltype(vt);
        with_nv(D / VT::L, [&](auto nv) {
          FS_LAUNCH(blocks_for(B, WARPS_PER_BLOCK), 256, 0, s,
                    forward_kernel<T, VT, std::remove_const_t<std::remove_pointer_t<decltype(bags.ids)>>,
                                   std::remove_const_t<std::remove_pointer_t<decltype(bags.offsets)>>,
                                   decltype(nv)::value>)(as_ptr<const T>(weight), V, D, bags, B,
                                                               as_ptr<const T>(psw), pad, mean, as_ptr<T>(out), e, tag);
        });
      };
      if (vec_ok(D, sizeof(T), {weight, out})) run(Vec<T>{});
      else run(Vec1<T>{});
      FS_CUDA_LAUNCHED(OP);
    });
  });
}

i64 embedding_bag_backward_workspace(i64 N, i64 B, i64 V, int fsize, bool sparse) {
  seg_limits(OPB, N, V, B);
  return seg_layout(N, V, fsize, true, sparse).total;
}

namespace {
template <class T, class BG>
void launch_prep(const BG& bags, i64 B, i64 V, up psw, i64 pad, bool mean, const SegPtrs* p, u64* err, u64 tag,
                 cudaStream_t s) {
  using I = std::remove_const_t<std::remove_pointer_t<decltype(bags.ids)>>;
  using O = std::remove_const_t<std::remove_pointer_t<decltype(bags.offsets)>>;
  if (B == 0) return;
  if (p) {
    FS_LAUNCH(blocks_for(B, WARPS_PER_BLOCK), 256, 0, s, prep_kernel<T, I, O, true>)(
        bags, B, V, as_ptr<const T>(psw), pad, mean, p->keys_in, p->pos_in, p->bag, static_cast<T*>(p->coef), err,
        tag);
  } else {
    FS_LAUNCH(blocks_for(B, WARPS_PER_BLOCK), 256, 0, s, prep_kernel<T, I, O, false>)(
        bags, B, V, as_ptr<const T>(psw), pad, mean, nullptr, nullptr, nullptr, nullptr, err, tag);
  }
  FS_CUDA_LAUNCHED(OPB);
}
}  // namespace

void embedding_bag_backward_dense(up dout, up ids, up offsets, up psw, i64 pad, bool mean, up grad, i64 V, i64 D,
                                  i64 B, i64 N, i64 Tlen, int fsize, int isize, int osize, bool deterministic,
                                  up ws, i64 ws_bytes, up err, u64 tag, up stream) {
  need(err != 0, OPB, "an error word is required");
  cudaStream_t s = as_stream(stream);
  u64* e = as_ptr<u64>(err);
  with_float(fsize, OPB, [&](auto tt) {
    using T = decltype(tt);
    if (!deterministic) {
      with_bags(OPB, ids, offsets, B, N, Tlen, isize, osize, e, tag, s, [&](auto bags) {
        launch_prep<T>(bags, B, V, psw, pad, mean, nullptr, e, tag, s);
        if (V * D > 0) {
          FS_LAUNCH(stride_blocks(V * D), 256, 0, s, zero_kernel<T>)(as_ptr<T>(grad), V * D, e);
          FS_CUDA_LAUNCHED(OPB);
        }
        if (B > 0 && D > 0) {
          using I = std::remove_const_t<std::remove_pointer_t<decltype(bags.ids)>>;
          using O = std::remove_const_t<std::remove_pointer_t<decltype(bags.offsets)>>;
          FS_LAUNCH(blocks_for(B, WARPS_PER_BLOCK), 256, 0, s, atomic_kernel<T, I, O>)(
              as_ptr<const T>(dout), D, bags, B, as_ptr<const T>(psw), pad, mean, as_ptr<T>(grad), e);
          FS_CUDA_LAUNCHED(OPB);
        }
      });
      return;
    }
    seg_limits(OPB, N, V, B);
    const SegPtrs p = seg_ptrs(ws, ws_bytes, seg_layout(N, V, fsize, true, false), OPB);
    with_bags(OPB, ids, offsets, B, N, Tlen, isize, osize, e, tag, s,
              [&](auto bags) { launch_prep<T>(bags, B, V, psw, pad, mean, &p, e, tag, s); });
    seg_dense<T, true>(OPB, as_ptr<const T>(dout), D, p, N, as_ptr<T>(grad), V, e, s,
                       vec_ok(D, sizeof(T), {dout, grad}));
  });
}

void embedding_bag_backward_rows(up ids, up offsets, up psw, i64 pad, bool mean, up rows, up count, i64 V, i64 B,
                                 i64 N, i64 Tlen, int fsize, int isize, int osize, up ws, i64 ws_bytes, up err,
                                 u64 tag, up stream) {
  need(err != 0 && count != 0, OPB, "an error word and a count word are required");
  seg_limits(OPB, N, V, B);
  cudaStream_t s = as_stream(stream);
  u64* e = as_ptr<u64>(err);
  const SegPtrs p = seg_ptrs(ws, ws_bytes, seg_layout(N, V, fsize, true, true), OPB);
  with_float(fsize, OPB, [&](auto tt) {
    using T = decltype(tt);
    with_bags(OPB, ids, offsets, B, N, Tlen, isize, osize, e, tag, s,
              [&](auto bags) { launch_prep<T>(bags, B, V, psw, pad, mean, &p, e, tag, s); });
  });
  // With bad offsets prep wrote nothing; the caller raises before using rows or count, and
  // the keys it sorts then are stale workspace bytes, which only ever bound a segment.
  seg_rows(OPB, p, N, V, as_ptr<i64>(rows), as_ptr<i64>(count), s);
}

void embedding_bag_backward_values(up dout, up values, i64 V, i64 D, i64 B, i64 N, i64 U, int fsize, up ws,
                                   i64 ws_bytes, up count, up err, up stream) {
  const SegPtrs p = seg_ptrs(ws, ws_bytes, seg_layout(N, V, fsize, true, true), OPB);
  cudaStream_t s = as_stream(stream);
  (void)B;
  with_float(fsize, OPB, [&](auto tt) {
    using T = decltype(tt);
    seg_values<T, true>(OPB, as_ptr<const T>(dout), D, p, U, as_ptr<const i64>(count), as_ptr<T>(values),
                        as_ptr<const u64>(err), s,
                        vec_ok(D, sizeof(T), {dout, values}));
  });
}

}  // namespace cuda
}  // namespace fastscale
