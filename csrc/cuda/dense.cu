// dense: out = act(x @ weight + bias) and its backward, Keras layout (x (B, I), weight (I, O)).
//
// One shared-memory tiled GEMM, C (M, N) = A (M, K) @ Bm (K, N), with the operands given by
// load functors so that transposes (x^T, W^T) need no copy and the activation derivative
// dz = dout * act'(out) is computed while loading (never stored).  Tiles of 64 x 64 outputs,
// K in steps of 16, 256 threads each computing a 4 x 4 register block; every output is one
// in-order chain over k computed by one thread: deterministic.  The epilogue fuses bias and
// activation.  dbias = column sums of dz in row order, one thread per column.
//
// At the origin's sizes (64 x 128 @ 128 x 64) this is one or two blocks and the cost is the
// launch; a hand-written kernel keeps the extension free of a cuBLAS dependency (the wheel
// needs only the driver).
#include "common.cuh"
#include "launchers.h"

namespace fastscale {
namespace cuda {
namespace {

const char* const OP = "dense_forward";
const char* const OPB = "dense_backward";

enum Act : int { ACT_NONE = 0, ACT_RELU = 1, ACT_SIGMOID = 2, ACT_TANH = 3 };

constexpr int BM = 64, BN = 64, BK = 16, TM = 4, TN = 4;

template <class T>
__device__ __forceinline__ T act_f(T v, int act) {
  if (act == ACT_RELU) return v < T(0) ? T(0) : v;  // NaN stays NaN, as np.maximum
  if (act == ACT_SIGMOID) {
    if (v >= T(0)) return T(1) / (T(1) + exp(-v));
    const T e = exp(v);
    return e / (T(1) + e);
  }
  if (act == ACT_TANH) return tanh(v);
  return v;
}

// dz from the forward output, as the numpy backend computes it.
template <class T>
__device__ __forceinline__ T dact(T g, T y, int act) {
  if (act == ACT_RELU) return g * (y > T(0) ? T(1) : T(0));
  if (act == ACT_SIGMOID) return g * (y * (T(1) - y));
  if (act == ACT_TANH) return g * (T(1) - y * y);
  return g;
}

// a[r * rs + c * cs]
template <class T>
struct Strided {
  const T* p;
  i64 rs, cs;
  __device__ __forceinline__ T operator()(i64 r, i64 c) const { return p[r * rs + c * cs]; }
};

// dz[r, c] (or its transpose, via strides) = dout * act'(out)
template <class T>
struct DZ {
  const T* g;
  const T* y;
  i64 rs, cs;
  int act;
  __device__ __forceinline__ T operator()(i64 r, i64 c) const {
    const i64 i = r * rs + c * cs;
    return act == ACT_NONE ? g[i] : dact(g[i], y[i], act);
  }
};

template <class T, class LA, class LB>
__global__ void __launch_bounds__(256) gemm_kernel(i64 M, i64 N, i64 K, LA a, LB bm, const T* __restrict__ bias,
                                                   int act, T* __restrict__ C) {
  __shared__ T As[BK][BM + 1];
  __shared__ T Bs[BK][BN + 1];
  const int tid = threadIdx.x;
  const int tr = tid / (BN / TN), tc = tid % (BN / TN);  // 16 x 16 threads
  const i64 m0 = static_cast<i64>(blockIdx.y) * BM, n0 = static_cast<i64>(blockIdx.x) * BN;
  T acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = T(0);
  for (i64 k0 = 0; k0 < K; k0 += BK) {
    // 64 x 16 elements of each operand, 4 per thread; out-of-range ones are 0.
#pragma unroll
    for (int q = 0; q < (BM * BK) / 256; ++q) {
      const int e = tid + q * 256;
      const int mm = e / BK, kk = e % BK;
      const i64 gm = m0 + mm, gk = k0 + kk;
      As[kk][mm] = (gm < M && gk < K) ? a(gm, gk) : T(0);
    }
#pragma unroll
    for (int q = 0; q < (BN * BK) / 256; ++q) {
      const int e = tid + q * 256;
      const int kk = e / BN, nn = e % BN;
      const i64 gk = k0 + kk, gn = n0 + nn;
      Bs[kk][nn] = (gk < K && gn < N) ? bm(gk, gn) : T(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      T av[TM], bv[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) av[i] = As[kk][tr + i * (BM / TM)];
#pragma unroll
      for (int j = 0; j < TN; ++j) bv[j] = Bs[kk][tc + j * (BN / TN)];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] += av[i] * bv[j];
    }
    __syncthreads();
  }
  // Each thread's outputs are strided by 16 so a warp's stores cover 16 adjacent columns.
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const i64 gm = m0 + tr + i * (BM / TM);
    if (gm >= M) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const i64 gn = n0 + tc + j * (BN / TN);
      if (gn >= N) continue;
      T v = acc[i][j];
      if (bias != nullptr) v += bias[gn];
      C[gm * N + gn] = act_f(v, act);
    }
  }
}

template <class T>
__global__ void dbias_kernel(const T* __restrict__ dout, const T* __restrict__ y, int act, i64 B, i64 O,
                             T* __restrict__ dbias) {
  for (i64 o = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; o < O;
       o += static_cast<i64>(gridDim.x) * blockDim.x) {
    T s = T(0);
    for (i64 b = 0; b < B; ++b) {
      const i64 i = b * O + o;
      s += act == ACT_NONE ? dout[i] : dact(dout[i], y[i], act);
    }
    dbias[o] = s;
  }
}

template <class T, class LA, class LB>
void gemm(const char* op, i64 M, i64 N, i64 K, LA a, LB b, const T* bias, int act, T* C, cudaStream_t s) {
  if (M == 0 || N == 0) return;
  need((N + BN - 1) / BN <= 0x7fffffff && (M + BM - 1) / BM <= 65535, op, "matrix too large for the cuda kernel's grid");
  dim3 grid(static_cast<unsigned>((N + BN - 1) / BN), static_cast<unsigned>((M + BM - 1) / BM));
  FS_LAUNCH(grid, 256, 0, s, gemm_kernel<T, LA, LB>)(M, N, K, a, b, bias, act, C);
  FS_CUDA_LAUNCHED(op);
}

}  // namespace

void dense_forward(up x, up weight, up bias, int act, up out, i64 B, i64 I, i64 O, int fsize, up stream) {
  need(act >= 0 && act <= 3, OP, "activation code must be 0..3");
  cudaStream_t s = as_stream(stream);
  with_float(fsize, OP, [&](auto tt) {
    using T = decltype(tt);
    gemm<T>(OP, B, O, I, Strided<T>{as_ptr<const T>(x), I, 1}, Strided<T>{as_ptr<const T>(weight), O, 1},
            as_ptr<const T>(bias), act, as_ptr<T>(out), s);
  });
}

void dense_backward(up dout, up x, up weight, up out, int act, up dx, up dweight, up dbias, i64 B, i64 I, i64 O,
                    int fsize, up stream) {
  need(act >= 0 && act <= 3, OPB, "activation code must be 0..3");
  // An empty output (B == 0 or O == 0) may come as a null pointer: CuPy allocates nothing
  // for zero bytes, so its data.ptr is 0.
  need(act == ACT_NONE || out != 0 || B == 0 || O == 0, OPB, "an activation needs the forward output");
  cudaStream_t s = as_stream(stream);
  with_float(fsize, OPB, [&](auto tt) {
    using T = decltype(tt);
    const T* g = as_ptr<const T>(dout);
    const T* y = as_ptr<const T>(out);
    // dW (I, O) = x^T (I, B) @ dz (B, O)
    gemm<T>(OPB, I, O, B, Strided<T>{as_ptr<const T>(x), 1, I}, DZ<T>{g, y, O, 1, act}, nullptr, ACT_NONE,
            as_ptr<T>(dweight), s);
    // dx (B, I) = dz (B, O) @ W^T (O, I)
    if (dx != 0)
      gemm<T>(OPB, B, I, O, DZ<T>{g, y, O, 1, act}, Strided<T>{as_ptr<const T>(weight), 1, O}, nullptr, ACT_NONE,
              as_ptr<T>(dx), s);
    if (O > 0) {
      FS_LAUNCH(blocks_for(O, 256, 1024), 256, 0, s, dbias_kernel<T>)(g, y, act, B, O, as_ptr<T>(dbias));
      FS_CUDA_LAUNCHED(OPB);
    }
  });
}

}  // namespace cuda
}  // namespace fastscale
