// dense: out = act(x @ weight + bias) and its backward, for the small shapes of the origin
// model (64x128 @ 128x64, 64x64 @ 64x1), where BLAS costs more in call overhead and in
// waking its own thread pool than the arithmetic takes.
//
// One register-tiled kernel computes C = A @ B (+ bias, + activation) for row-major B and
// A given by strides (so x^T needs no copy): a tile of MR = 4 rows x NV vectors of
// accumulators stays in registers while k runs over the whole inner dimension, A is
// broadcast and B's row chunk is loaded once per k and FMA'd into the 4 rows.  Tile sizes
// follow the ISA chosen at run time (AVX-512: 4 x 4 zmm = 4 x 64 floats; AVX2: 4 x 3 ymm;
// baseline SSE2: 4 x 3 xmm).  Columns left over go one vector at a time, then scalar.
//
// Threads split fixed (row block, column panel) items, never a reduction: every output
// element is one in-order FMA chain over k computed by one thread, so results are bitwise
// the same for any thread count.  The OpenMP regions are here, outside the multiversioned
// bodies (see common.h).
//
// Backward: dz = dout * act'(out) (from the forward output), dW = x^T dz, dx = dz W^T
// (W^T copied once into the caller's scratch so the same kernel applies), dbias = column
// sums of dz in row order; all in one parallel region.
#pragma GCC diagnostic ignored "-Wpsabi"  // vector types only cross always-inline calls
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common.h"

namespace fastscale {
namespace {

enum Act : int { ACT_NONE = 0, ACT_RELU = 1, ACT_SIGMOID = 2, ACT_TANH = 3 };

constexpr int MR = 4;          // rows per register tile
constexpr i64 PANEL = 384;     // columns per work item: a multiple of every tile width
// Multiply-adds per GEMM below which the caller's thread does it alone.  Measured here: at
// 64x128x64 (0.5 M) two threads took the forward from 6.6 to 4.4 us and the backward not at
// all when the cores are free, but when they are oversubscribed (other processes or thread
// pools) each fork/join can wait a scheduler tick (~10 ms).  One thread is already ahead
// of NumPy + OpenBLAS at these sizes, so only larger problems fork.
constexpr i64 PAR_MIN = 1 << 20;

template <int VB_, int NV_>
struct Cfg {
  static constexpr int VB = VB_;  // vector bytes
  static constexpr int NV = NV_;  // vectors per tile row
};
using Cfg512 = Cfg<64, 4>;  // 16 zmm accumulators + 4 B vectors + 1 broadcast of 32
using Cfg256 = Cfg<32, 3>;  // 12 ymm accumulators + 3 + 1 of 16
using Cfg128 = Cfg<16, 3>;  // 12 xmm, baseline SSE2

template <class T, int VB>
struct VecOf {
  typedef T type __attribute__((vector_size(VB)));
};

template <class V, class T>
FS_INLINE V vload(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <class V, class T>
FS_INLINE void vstore(T* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// Overflow-free sigmoid: exp of a non-positive argument only.
template <class T>
FS_INLINE T sigmoid(T z) {
  if (z >= T(0)) return T(1) / (T(1) + std::exp(-z));
  const T e = std::exp(z);
  return e / (T(1) + e);
}

template <class T>
FS_INLINE T act_scalar(T v, int act) {
  switch (act) {
    case ACT_RELU: return v < T(0) ? T(0) : v;  // NaN stays NaN, as np.maximum(v, 0)
    case ACT_SIGMOID: return sigmoid(v);
    case ACT_TANH: return std::tanh(v);
    default: return v;
  }
}

// C[m, n] = act(sum_k A[m, k] * B[k, n] + bias[n]), A[m, k] = a[m*sm + k*sk],
// B[k, n] = b[k*ldb + n], C[m, n] = c[m*ldc + n].
template <class T>
struct Gemm {
  const T* a;
  i64 sm, sk;
  const T* b;
  i64 ldb;
  const T* bias;  // (N,) or nullptr
  T* c;
  i64 ldc;
  i64 M, N, K;
  int act;
};

// sigmoid / tanh are not vectorised (libm); relu and bias are applied in the vector epilogue.
template <class T>
FS_INLINE void act_tail(const Gemm<T>& g, i64 m0, int R, i64 n0, i64 w) {
  if (g.act != ACT_SIGMOID && g.act != ACT_TANH) return;
  for (int r = 0; r < R; ++r) {
    T* o = g.c + (m0 + r) * g.ldc + n0;
    for (i64 j = 0; j < w; ++j) o[j] = act_scalar(o[j], g.act);
  }
}

// R rows x NV vectors at column n0.
template <class T, class V, int R, int NV>
FS_INLINE void tile_vec(const Gemm<T>& g, i64 m0, i64 n0) {
  constexpr int VL = sizeof(V) / sizeof(T);
  V acc[R][NV];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[r][v] = V{};
  const T* FS_RESTRICT ap = g.a + m0 * g.sm;
  const T* FS_RESTRICT bp = g.b + n0;
  const i64 sm = g.sm, sk = g.sk, ldb = g.ldb, K = g.K;
  for (i64 k = 0; k < K; ++k) {
    V w[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) w[v] = vload<V>(bp + k * ldb + v * VL);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const T s = ap[r * sm + k * sk];
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[r][v] += s * w[v];
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      V o = acc[r][v];
      if (g.bias) o += vload<V>(g.bias + n0 + v * VL);
      if (g.act == ACT_RELU) o = o < T(0) ? V{} : o;
      vstore(g.c + (m0 + r) * g.ldc + n0 + v * VL, o);
    }
  act_tail(g, m0, R, n0, NV * VL);
}

// R rows, columns [n0, n1) narrower than a vector: one scalar chain per row (R in flight).
template <class T, int R>
FS_INLINE void tile_scalar(const Gemm<T>& g, i64 m0, i64 n0, i64 n1) {
  for (i64 n = n0; n < n1; ++n) {
    T acc[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r] = T(0);
    for (i64 k = 0; k < g.K; ++k) {
      const T w = g.b[k * g.ldb + n];
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[r] += g.a[(m0 + r) * g.sm + k * g.sk] * w;
    }
    for (int r = 0; r < R; ++r) {
      T o = acc[r];
      if (g.bias) o += g.bias[n];
      g.c[(m0 + r) * g.ldc + n] = act_scalar(o, g.act);
    }
  }
}

// N == 1 with A's rows contiguous (the 64x64 @ 64x1 layer): R dot products vectorised over
// k, lanes summed in a fixed order.
template <class T, class V, int R>
FS_INLINE void tile_dot(const Gemm<T>& g, i64 m0) {
  constexpr int VL = sizeof(V) / sizeof(T);
  V acc[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r] = V{};
  const T* FS_RESTRICT ap = g.a + m0 * g.sm;
  i64 k = 0;
  for (; k + VL <= g.K; k += VL) {
    const V w = vload<V>(g.b + k);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r] += vload<V>(ap + r * g.sm + k) * w;
  }
  T s[R];
  for (int r = 0; r < R; ++r) {
    s[r] = T(0);
    for (int l = 0; l < VL; ++l) s[r] += acc[r][l];
  }
  for (; k < g.K; ++k)
    for (int r = 0; r < R; ++r) s[r] += ap[r * g.sm + k] * g.b[k];
  for (int r = 0; r < R; ++r) {
    T o = s[r];
    if (g.bias) o += g.bias[0];
    g.c[(m0 + r) * g.ldc] = act_scalar(o, g.act);
  }
}

template <class T, class Cf, int R>
FS_INLINE void panel(const Gemm<T>& g, i64 m0, i64 n0, i64 n1) {
  using V = typename VecOf<T, Cf::VB>::type;
  constexpr int VL = Cf::VB / sizeof(T);
  if (g.N == 1 && g.sk == 1 && g.ldb == 1) {
    tile_dot<T, V, R>(g, m0);
    return;
  }
  i64 n = n0;
  for (; n + Cf::NV * VL <= n1; n += Cf::NV * VL) tile_vec<T, V, R, Cf::NV>(g, m0, n);
  for (; n + VL <= n1; n += VL) tile_vec<T, V, R, 1>(g, m0, n);
  if (n < n1) tile_scalar<T, R>(g, m0, n, n1);
}

// One work item: rows [m0, m0 + MR) (fewer at the bottom) x columns [n0, n1).
template <class T, class Cf>
FS_INLINE void gemm_item_body(const Gemm<T>* g, i64 m0, i64 n0, i64 n1) {
  switch (std::min<i64>(MR, g->M - m0)) {
    case 4: panel<T, Cf, 4>(*g, m0, n0, n1); break;
    case 3: panel<T, Cf, 3>(*g, m0, n0, n1); break;
    case 2: panel<T, Cf, 2>(*g, m0, n0, n1); break;
    default: panel<T, Cf, 1>(*g, m0, n0, n1); break;
  }
}
FS_MULTIVERSION(gemm_item, gemm_item_body)

// Each ISA variant gets the tile shape that fits its register file.
template <class T>
void gemm_item_isa(const Gemm<T>* g, i64 m0, i64 n0, i64 n1) {
  switch (active_isa()) {
    case Isa::avx512: gemm_item_avx512<T, Cfg512>(g, m0, n0, n1); break;
    case Isa::avx2: gemm_item_avx2<T, Cfg256>(g, m0, n0, n1); break;
    default: gemm_item_scalar<T, Cfg128>(g, m0, n0, n1); break;
  }
}

inline i64 cdiv(i64 a, i64 b) { return (a + b - 1) / b; }

template <class T>
FS_INLINE i64 gemm_items(const Gemm<T>& g) {
  return cdiv(g.M, MR) * cdiv(g.N, PANEL);
}
template <class T>
FS_INLINE void gemm_run_item(const Gemm<T>& g, i64 it) {
  const i64 np = cdiv(g.N, PANEL);
  const i64 m0 = (it / np) * MR, n0 = (it % np) * PANEL;
  gemm_item_isa<T>(&g, m0, n0, std::min(g.N, n0 + PANEL));
}

template <class T>
void forward_kernel(const Gemm<T>& g) {
  const i64 items = gemm_items(g);
  const bool par = items > 1 && g.M * g.N * g.K >= PAR_MIN;
#pragma omp parallel for schedule(static) num_threads(get_num_threads()) if (par)
  for (i64 it = 0; it < items; ++it) gemm_run_item(g, it);
}

// ---------------------------------------------------------------- backward pieces
constexpr i64 ROWS = 16;  // rows per elementwise / transpose work item

template <class T>
FS_INLINE void dz_rows_body(const T* dout, const T* out, int act, T* dz, i64 r0, i64 r1, i64 O) {
  const T* FS_RESTRICT d = dout + r0 * O;
  const T* FS_RESTRICT y = out + r0 * O;
  T* FS_RESTRICT z = dz + r0 * O;
  const i64 n = (r1 - r0) * O;
  switch (act) {
    case ACT_RELU:
      for (i64 i = 0; i < n; ++i) z[i] = y[i] > T(0) ? d[i] : T(0);
      break;
    case ACT_SIGMOID:
      for (i64 i = 0; i < n; ++i) z[i] = d[i] * (y[i] * (T(1) - y[i]));
      break;
    case ACT_TANH:
      for (i64 i = 0; i < n; ++i) z[i] = d[i] * (T(1) - y[i] * y[i]);
      break;
    default:
      for (i64 i = 0; i < n; ++i) z[i] = d[i];
  }
}
FS_MULTIVERSION(dz_rows, dz_rows_body)

// Rows [j0, j1) of wt (O, I) = W^T: a thread writes whole rows of wt, so two threads never
// share a cache line of it; W (read with stride O) is small and cache-resident.
template <class T>
FS_INLINE void transpose_body(const T* w, T* wt, i64 j0, i64 j1, i64 I, i64 O) {
  for (i64 j = j0; j < j1; ++j) {
    T* FS_RESTRICT r = wt + j * I;
    for (i64 i = 0; i < I; ++i) r[i] = w[i * O + j];
  }
}
FS_MULTIVERSION(transpose_rows, transpose_body)

// db[n0:n1] = sum over rows b = 0, 1, ... of dz[b, n0:n1] (vectorised across columns).
template <class T>
FS_INLINE void colsum_body(const T* dz, T* db, i64 B, i64 O, i64 n0, i64 n1) {
  T* FS_RESTRICT o = db + n0;
  const i64 w = n1 - n0;
  for (i64 j = 0; j < w; ++j) o[j] = T(0);
  for (i64 b = 0; b < B; ++b) {
    const T* FS_RESTRICT r = dz + b * O + n0;
    for (i64 j = 0; j < w; ++j) o[j] += r[j];
  }
}
FS_MULTIVERSION(colsum, colsum_body)

template <class T>
void backward_kernel(const T* dout, const T* x, const T* w, const T* out, int act, T* dx, T* dw, T* db, T* work,
                     i64 B, i64 I, i64 O) {
  const bool need_dz = act != ACT_NONE;
  const T* dz = need_dz ? work : dout;
  T* dzw = need_dz ? work : nullptr;
  // O == 1: W (I, 1) already is W^T (1, I).
  const bool need_wt = dx && O > 1;
  T* wt = need_wt ? work + (need_dz ? B * O : 0) : nullptr;

  // dW (I, O) = x^T dz.  For O == 1 compute dW^T (1, I) = dz^T x instead: one row,
  // vectorised over I, rather than I scalar dot products over strided x.
  Gemm<T> gw;
  if (O == 1)
    gw = Gemm<T>{dz, 0, 1, x, I, nullptr, dw, I, 1, I, B, ACT_NONE};
  else
    gw = Gemm<T>{x, 1, I, dz, O, nullptr, dw, O, I, O, B, ACT_NONE};
  // dx (B, I) = dz (B, O) @ W^T (O, I).
  const Gemm<T> gx{dz, O, 1, need_wt ? wt : w, I, nullptr, dx, I, B, I, O, ACT_NONE};

  const i64 nw = gemm_items(gw), nx = dx ? gemm_items(gx) : 0, nb = cdiv(O, PANEL);
  const i64 nrow = cdiv(B, ROWS), nwt = need_wt ? cdiv(O, ROWS) : 0;
  const bool par = (nw + nx + nb) > 1 && B * I * O >= PAR_MIN;

#pragma omp parallel num_threads(get_num_threads()) if (par)
  {
    if (need_dz) {
#pragma omp for schedule(static) nowait
      for (i64 rb = 0; rb < nrow; ++rb) dz_rows<T>(dout, out, act, dzw, rb * ROWS, std::min(B, rb * ROWS + ROWS), O);
    }
    if (need_wt) {
#pragma omp for schedule(static) nowait
      for (i64 jb = 0; jb < nwt; ++jb) transpose_rows<T>(w, wt, jb * ROWS, std::min(O, jb * ROWS + ROWS), I, O);
    }
    if (need_dz || need_wt) {
#pragma omp barrier
    }
    // Items differ in cost (dW vs dx tiles), hence dynamic; which thread takes an item
    // never changes what it computes.
#pragma omp for schedule(dynamic, 1)
    for (i64 it = 0; it < nw + nx + nb; ++it) {
      if (it < nw) {
        gemm_run_item(gw, it);
      } else if (it < nw + nx) {
        gemm_run_item(gx, it - nw);
      } else {
        const i64 n0 = (it - nw - nx) * PANEL;
        colsum<T>(dz, db, B, O, n0, std::min(O, n0 + PANEL));
      }
    }
  }
}

// ------------------------------------------------------------------ bindings
const char* const OP = "dense_forward";
const char* const OPB = "dense_backward";

void need2(const py::array& a, const char* op, const char* name) {
  if (a.ndim() != 2) shape_error(op, std::string("argument '") + name + "' must be 2-D");
}

}  // namespace

void bind_dense(py::module_& m) {
  m.def(
      "dense_forward",
      [](py::array x, py::array weight, py::object bias, int act, py::array out) {
        need2(x, OP, "x");
        need2(weight, OP, "weight");
        need2(out, OP, "out");
        const i64 B = dim(x, 0), I = dim(x, 1), O = dim(weight, 1);
        if (dim(weight, 0) != I) shape_error(OP, "x (B, I) and weight (I, O) disagree on I");
        if (dim(out, 0) != B || dim(out, 1) != O) shape_error(OP, "out must be (B, O)");
        if (act < ACT_NONE || act > ACT_TANH) shape_error(OP, "unknown activation code");
        with_float(x, OP, "x", [&](auto tt) {
          using T = decltype(tt);
          const T* bp = nullptr;
          if (!bias.is_none()) {
            py::array b = bias.cast<py::array>();
            if (b.ndim() != 1 || dim(b, 0) != O) shape_error(OP, "bias must be (O,)");
            bp = cptr<T>(b, dt_of<T>(), OP, "bias");
          }
          const Gemm<T> g{cptr<T>(x, dt_of<T>(), OP, "x"), I, 1, cptr<T>(weight, dt_of<T>(), OP, "weight"), O, bp,
                          mptr<T>(out, dt_of<T>(), OP, "out"), O, B, O, I, act};
          py::gil_scoped_release nogil;
          forward_kernel(g);
        });
      },
      py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("activation"), py::arg("out"),
      "out (B, O) = act(x (B, I) @ weight (I, O) + bias); activation 0 none, 1 relu, 2 sigmoid, 3 tanh");

  m.def(
      "dense_backward",
      [](py::array dout, py::array x, py::array weight, py::object out, int act, py::object dx, py::array dweight,
         py::array dbias, py::object work) {
        need2(dout, OPB, "dout");
        need2(x, OPB, "x");
        need2(weight, OPB, "weight");
        need2(dweight, OPB, "dweight");
        const i64 B = dim(x, 0), I = dim(x, 1), O = dim(weight, 1);
        if (dim(weight, 0) != I) shape_error(OPB, "x (B, I) and weight (I, O) disagree on I");
        if (dim(dout, 0) != B || dim(dout, 1) != O) shape_error(OPB, "dout must be (B, O)");
        if (dim(dweight, 0) != I || dim(dweight, 1) != O) shape_error(OPB, "dweight must be (I, O)");
        if (dbias.ndim() != 1 || dim(dbias, 0) != O) shape_error(OPB, "dbias must be (O,)");
        if (act < ACT_NONE || act > ACT_TANH) shape_error(OPB, "unknown activation code");
        with_float(dout, OPB, "dout", [&](auto tt) {
          using T = decltype(tt);
          const Dt dt = dt_of<T>();
          const T* yp = nullptr;
          if (act != ACT_NONE) {
            if (out.is_none()) shape_error(OPB, "the activation's derivative needs 'out'");
            py::array y = out.cast<py::array>();
            need2(y, OPB, "out");
            if (dim(y, 0) != B || dim(y, 1) != O) shape_error(OPB, "out must be (B, O)");
            yp = cptr<T>(y, dt, OPB, "out");
          }
          T* dxp = nullptr;
          if (!dx.is_none()) {
            py::array d = dx.cast<py::array>();
            need2(d, OPB, "dx");
            if (dim(d, 0) != B || dim(d, 1) != I) shape_error(OPB, "dx must be (B, I)");
            dxp = mptr<T>(d, dt, OPB, "dx");
          }
          // Scratch: dz (B*O) when there is an activation, W^T (O*I) when dx is wanted.
          const i64 need = (act != ACT_NONE ? B * O : 0) + (dxp && O > 1 ? O * I : 0);
          T* wk = nullptr;
          if (need > 0) {
            if (work.is_none()) shape_error(OPB, "work buffer missing");
            py::array wa = work.cast<py::array>();
            if (static_cast<i64>(wa.size()) < need) shape_error(OPB, "work buffer too small");
            wk = mptr<T>(wa, dt, OPB, "work");
          }
          const T* gp = cptr<T>(dout, dt, OPB, "dout");
          const T* xp = cptr<T>(x, dt, OPB, "x");
          const T* wp = cptr<T>(weight, dt, OPB, "weight");
          T* dwp = mptr<T>(dweight, dt, OPB, "dweight");
          T* dbp = mptr<T>(dbias, dt, OPB, "dbias");
          py::gil_scoped_release nogil;
          backward_kernel<T>(gp, xp, wp, yp, act, dxp, dwp, dbp, wk, B, I, O);
        });
      },
      py::arg("dout"), py::arg("x"), py::arg("weight"), py::arg("out"), py::arg("activation"), py::arg("dx"),
      py::arg("dweight"), py::arg("dbias"), py::arg("work"),
      "dx (B, I) (or None), dweight (I, O), dbias (O,) from dout and the forward output 'out'; "
      "work: scratch of at least B*O (with an activation) + O*I (with dx, O > 1) elements");
}

}  // namespace fastscale
