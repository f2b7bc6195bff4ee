// adam: the fused Adam update, in place, one pass over (param, grad, m, v).
//
// Per element (coefficients computed once, in double, by the Python layer; see
// csrc/cpu/adam.cpp, whose formulas this mirrors exactly):
//   L2 decay       g  = g + wd * p
//   decoupled      p  = p * decay                       (decay = 1 - lr * wd, AdamW)
//                  m  = beta1 * m + c1 * g              (c1 = 1 - beta1)
//                  v  = b2 * v + c2 * g * g             (c2 = 1 - beta2)
//                  p  = p - alpha * m / (sqrt(v) + eps)
//
// Dense: multi-tensor apply, as PyTorch's fused Adam: the pointers and sizes of up to 24
// tensors and a table of up to 320 (tensor, 64K-element chunk) work items travel in the
// kernel's parameter block (no device-side pointer table, no copy), one block per item;
// more tensors or chunks take more launches.  16-byte vectors when a tensor's four arrays
// are 16-byte aligned; the last < 4 elements of a tensor go scalar.  Sparse (lazy Adam):
// a validation kernel (rows in [0, V), strictly increasing), then one warp per listed row,
// skipped entirely when validation failed, so nothing is written before the error.
#include <vector>

#include "common.cuh"
#include "launchers.h"

namespace fastscale {
namespace cuda {
namespace {

const char* const OP = "adam_step";
const char* const OPS = "sparse_adam_step";

enum Decay : int { NONE = 0, L2 = 1, DECOUPLED = 2 };

template <class T>
struct Coef {
  T c1, b2, c2, alpha, eps, wd, decay, b1;
};

template <class T>
Coef<T> make_coef(double beta1, double beta2, double alpha, double eps, double wd, double decay) {
  return Coef<T>{static_cast<T>(1.0 - beta1), static_cast<T>(beta2), static_cast<T>(1.0 - beta2),
                 static_cast<T>(alpha),       static_cast<T>(eps),   static_cast<T>(wd),
                 static_cast<T>(decay),       static_cast<T>(beta1)};
}

template <class T, int WD>
__device__ __forceinline__ void adam_elem(T& p, T g, T& m, T& v, const Coef<T>& k) {
  T pp = p;
  if (WD == L2) g = g + k.wd * pp;
  if (WD == DECOUPLED) pp = pp * k.decay;
  // beta1 * m + (1 - beta1) * g, not m + (1 - beta1) * (g - m): the latter cancels
  // catastrophically in float32 when |g| << |m| and beta1 is small (beta1 = 0 must give m = g).
  const T mm = k.b1 * m + k.c1 * g;
  const T vv = k.b2 * v + k.c2 * (g * g);
  m = mm;
  v = vv;
  p = pp - k.alpha * mm / (sqrt(vv) + k.eps);
}

constexpr int MT_TENSORS = 24;
constexpr int MT_BLOCKS = 320;
constexpr i64 CHUNK = 1 << 16;
constexpr int THREADS = 512;

template <class T>
struct MTArgs {
  T* p[MT_TENSORS];
  const T* g[MT_TENSORS];
  T* m[MT_TENSORS];
  T* v[MT_TENSORS];
  i64 n[MT_TENSORS];
  unsigned char vec[MT_TENSORS];
  unsigned char tensor[MT_BLOCKS];
  int chunk[MT_BLOCKS];
};

template <class T, int WD>
__global__ void __launch_bounds__(THREADS) multi_kernel(MTArgs<T> a, Coef<T> k, const u64* err) {
  if (failed(err)) return;
  const int t = a.tensor[blockIdx.x];
  const i64 n = a.n[t];
  const i64 s = static_cast<i64>(a.chunk[blockIdx.x]) * CHUNK;
  const i64 e = s + CHUNK < n ? s + CHUNK : n;
  T* __restrict__ p = a.p[t];
  const T* __restrict__ g = a.g[t];
  T* __restrict__ m = a.m[t];
  T* __restrict__ v = a.v[t];
  if (a.vec[t]) {
    constexpr int L = Vec<T>::L;
    const i64 ve = s + (e - s) / L * L;  // s is a multiple of L (CHUNK is)
    for (i64 i = s + static_cast<i64>(threadIdx.x) * L; i < ve; i += static_cast<i64>(THREADS) * L) {
      Vec<T> pv = Vec<T>::load_rw(p + i), gv = Vec<T>::load(g + i), mv = Vec<T>::load_rw(m + i),
             vv = Vec<T>::load_rw(v + i);
#pragma unroll
      for (int j = 0; j < L; ++j) adam_elem<T, WD>(pv.v[j], gv.v[j], mv.v[j], vv.v[j], k);
      pv.store(p + i);
      mv.store(m + i);
      vv.store(v + i);
    }
    for (i64 i = ve + threadIdx.x; i < e; i += THREADS) adam_elem<T, WD>(p[i], g[i], m[i], v[i], k);
  } else {
    for (i64 i = s + threadIdx.x; i < e; i += THREADS) adam_elem<T, WD>(p[i], g[i], m[i], v[i], k);
  }
}

template <class T>
void launch_multi(const MTArgs<T>& a, int nblocks, const Coef<T>& k, int mode, const u64* err, cudaStream_t s) {
  if (mode == L2) FS_LAUNCH(nblocks, THREADS, 0, s, multi_kernel<T, L2>)(a, k, err);
  else if (mode == DECOUPLED) FS_LAUNCH(nblocks, THREADS, 0, s, multi_kernel<T, DECOUPLED>)(a, k, err);
  else FS_LAUNCH(nblocks, THREADS, 0, s, multi_kernel<T, NONE>)(a, k, err);
  FS_CUDA_LAUNCHED(OP);
}

// The rows to update: R, or *count when the row count stays on the device (count <= R).
__device__ __forceinline__ i64 rows_used(i64 R, const i64* count) { return count && *count < R ? *count : R; }

// rows: in [0, V) (IndexError) and strictly increasing (ValueError); first position wins,
// and at one position an out-of-range row wins (ERR_ID < ERR_ORDER), as the CPU reports.
template <class I>
__global__ void rows_kernel(const I* __restrict__ rows, i64 R, const i64* count, i64 V, u64* err, u64 tag) {
  R = rows_used(R, count);
  for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < R;
       i += static_cast<i64>(gridDim.x) * blockDim.x) {
    const i64 r = static_cast<i64>(rows[i]);
    if (r < 0 || r >= V) report(err, tag, 0, i, ERR_ID);
    else if (i > 0 && r <= static_cast<i64>(rows[i - 1])) report(err, tag, 0, i, ERR_ORDER);
  }
}

template <class T, class VT, class I, int WD>
__global__ void __launch_bounds__(256) sparse_kernel(T* __restrict__ param, const I* __restrict__ rows,
                                                     const T* __restrict__ values, T* __restrict__ m,
                                                     T* __restrict__ v, i64 D, i64 R, const i64* count, Coef<T> k,
                                                     const u64* err) {
  if (failed(err)) return;
  R = rows_used(R, count);
  constexpr int L = VT::L;
  const int lane = threadIdx.x & 31;
  const i64 units = D / L;
  const i64 nwarps = static_cast<i64>(gridDim.x) * WARPS_PER_BLOCK;
  for (i64 i = static_cast<i64>(blockIdx.x) * WARPS_PER_BLOCK + (threadIdx.x >> 5); i < R; i += nwarps) {
    const i64 off = static_cast<i64>(rows[i]) * D;
    for (i64 u = lane; u < units; u += 32) {
      const i64 c = u * L;
      VT pv = VT::load_rw(param + off + c), gv = VT::load(values + i * D + c), mv = VT::load_rw(m + off + c),
         vv = VT::load_rw(v + off + c);
#pragma unroll
      for (int j = 0; j < L; ++j) adam_elem<T, WD>(pv.v[j], gv.v[j], mv.v[j], vv.v[j], k);
      pv.store(param + off + c);
      mv.store(m + off + c);
      vv.store(v + off + c);
    }
  }
}

}  // namespace

void adam_multi(const std::vector<up>& params, const std::vector<up>& grads, const std::vector<up>& ms,
                const std::vector<up>& vs, const std::vector<i64>& sizes, int fsize, double beta1, double beta2,
                double alpha, double eps, double wd, double decay, int mode, up err, up stream) {
  const size_t nt = params.size();
  need(grads.size() == nt && ms.size() == nt && vs.size() == nt && sizes.size() == nt, OP,
       "params, grads, ms, vs and sizes must have one entry per tensor");
  need(mode >= 0 && mode <= 2, OP, "decay mode must be 0, 1 or 2");
  cudaStream_t s = as_stream(stream);
  const u64* e = as_ptr<const u64>(err);
  with_float(fsize, OP, [&](auto tt) {
    using T = decltype(tt);
    const Coef<T> k = make_coef<T>(beta1, beta2, alpha, eps, wd, decay);
    MTArgs<T> a;
    int ntens = 0, nblocks = 0;
    for (size_t t = 0; t < nt; ++t) {
      const i64 n = sizes[t];
      if (n <= 0) continue;
      a.p[ntens] = as_ptr<T>(params[t]);
      a.g[ntens] = as_ptr<const T>(grads[t]);
      a.m[ntens] = as_ptr<T>(ms[t]);
      a.v[ntens] = as_ptr<T>(vs[t]);
      a.n[ntens] = n;
      a.vec[ntens] = vec_ok(0, sizeof(T), {params[t], grads[t], ms[t], vs[t]}) ? 1 : 0;
      const i64 nchunks = (n + CHUNK - 1) / CHUNK;
      need(nchunks <= 0x7fffffff, OP, "tensor too large");
      for (i64 c = 0; c < nchunks; ++c) {
        a.tensor[nblocks] = static_cast<unsigned char>(ntens);
        a.chunk[nblocks] = static_cast<int>(c);
        ++nblocks;
        const bool last_chunk = c + 1 == nchunks;
        if (nblocks == MT_BLOCKS || (last_chunk && ntens + 1 == MT_TENSORS)) {
          launch_multi<T>(a, nblocks, k, mode, e, s);
          nblocks = 0;
          if (!last_chunk) {  // the tensor continues in the next launch, in slot 0
            a.p[0] = a.p[ntens];
            a.g[0] = a.g[ntens];
            a.m[0] = a.m[ntens];
            a.v[0] = a.v[ntens];
            a.n[0] = a.n[ntens];
            a.vec[0] = a.vec[ntens];
            ntens = 0;
          } else {
            ntens = -1;  // incremented below
          }
        }
      }
      ++ntens;
    }
    if (nblocks > 0) launch_multi<T>(a, nblocks, k, mode, e, s);
  });
}

void sparse_adam_step(up param, up rows, up values, up m, up v, i64 V, i64 D, i64 R, int fsize, int isize,
                      double beta1, double beta2, double alpha, double eps, double wd, double decay, int mode,
                      up count, up err, u64 tag, up stream) {
  need(err != 0, OPS, "an error word is required");
  need(mode >= 0 && mode <= 2, OPS, "decay mode must be 0, 1 or 2");
  if (R == 0) return;
  cudaStream_t s = as_stream(stream);
  u64* e = as_ptr<u64>(err);
  const i64* n = as_ptr<const i64>(count);
  with_float(fsize, OPS, [&](auto tt) {
    using T = decltype(tt);
    const Coef<T> k = make_coef<T>(beta1, beta2, alpha, eps, wd, decay);
    with_index(isize, OPS, [&](auto ii) {
      using I = decltype(ii);
      FS_LAUNCH(blocks_for(R, 256, 132 * 16), 256, 0, s, rows_kernel<I>)(as_ptr<const I>(rows), R, n, V, e, tag);
      FS_CUDA_LAUNCHED(OPS);
      if (D == 0) return;
      auto run = [&](auto vt) {
        using VT = decltype(vt);
        const unsigned grid = blocks_for(R, WARPS_PER_BLOCK, 132 * 64);
        T* P = as_ptr<T>(param);
        const I* Rw = as_ptr<const I>(rows);
        const T* G = as_ptr<const T>(values);
        T* M = as_ptr<T>(m);
        T* Vv = as_ptr<T>(v);
        if (mode == L2) FS_LAUNCH(grid, 256, 0, s, sparse_kernel<T, VT, I, L2>)(P, Rw, G, M, Vv, D, R, n, k, e);
        else if (mode == DECOUPLED)
          FS_LAUNCH(grid, 256, 0, s, sparse_kernel<T, VT, I, DECOUPLED>)(P, Rw, G, M, Vv, D, R, n, k, e);
        else FS_LAUNCH(grid, 256, 0, s, sparse_kernel<T, VT, I, NONE>)(P, Rw, G, M, Vv, D, R, n, k, e);
      };
      if (vec_ok(D, sizeof(T), {param, values, m, v})) run(Vec<T>{});
      else run(Vec1<T>{});
      FS_CUDA_LAUNCHED(OPS);
    });
  });
}

}  // namespace cuda
}  // namespace fastscale
