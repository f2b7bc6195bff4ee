// adam: the fused Adam update, in place, one pass over (param, grad, m, v).
//
// Per element (coefficients computed once, in double, by the Python layer):
//   L2 decay       g  = g + wd * p
//   decoupled      p  = p * decay                       (decay = 1 - lr * wd, AdamW)
//                  m  = beta1 * m + c1 * g              (c1 = 1 - beta1)
//                  v  = b2 * v + c2 * g * g             (c2 = 1 - beta2)
//                  p  = p - alpha * m / (sqrt(v) + eps)
// Keras' epsilon-hat form and PyTorch's form differ only in alpha and eps (see
// src/fastscale/ops/adam.py), so one kernel serves both.
//
// The op is bandwidth bound (28 bytes per float32 parameter), so the kernel streams the
// four arrays once, sequentially, with float32 math for float32.  Threads take contiguous
// static ranges of 64-element blocks; each block runs the same fixed-width vector code, and
// the < 64 element tail always runs on the calling thread after the loop, so every element
// is computed by the same instructions whatever the thread count: bitwise reproducible.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>
#include <type_traits>

#include "common.h"

namespace fastscale {
namespace {

constexpr i64 BLK = 64;              // elements per scheduling block (4 zmm of float32)
constexpr i64 PAR_MIN = 1 << 15;     // below this, one thread (a parallel region costs more)

enum Decay : int { NONE = 0, L2 = 1, DECOUPLED = 2 };

template <class T>
struct Coef {
  T c1, b2, c2, alpha, eps, wd, decay, b1;
};

template <class T, int WD>
FS_INLINE void adam_elem(T& p, T g, T& m, T& v, const Coef<T>& k) {
  T pp = p;
  if (WD == L2) g = g + k.wd * pp;
  if (WD == DECOUPLED) pp = pp * k.decay;
  // beta1 * m + (1 - beta1) * g, not m + (1 - beta1) * (g - m): the latter cancels
  // catastrophically in float32 when |g| << |m| and beta1 is small (beta1 = 0 must give m = g).
  const T mm = k.b1 * m + k.c1 * g;
  const T vv = k.b2 * v + k.c2 * (g * g);
  m = mm;
  v = vv;
  p = pp - k.alpha * mm / (std::sqrt(vv) + k.eps);
}

// n elements; FIXED: n is a multiple of BLK and each block is one fixed-trip vector loop.
template <class T, int WD, bool FIXED>
FS_INLINE void dense_body(T* FS_RESTRICT p, const T* FS_RESTRICT g, T* FS_RESTRICT m, T* FS_RESTRICT v, i64 n,
                          Coef<T> k) {
  if (FIXED) {
    for (i64 b = 0; b < n; b += BLK) {
#pragma omp simd
      for (i64 j = b; j < b + BLK; ++j) adam_elem<T, WD>(p[j], g[j], m[j], v[j], k);
    }
  } else {
    for (i64 j = 0; j < n; ++j) adam_elem<T, WD>(p[j], g[j], m[j], v[j], k);
  }
}
// FS_MULTIVERSION takes type parameters only: the decay mode travels as W = integral_constant.
template <class T, class W>
FS_INLINE void dense_blocks_body(T* p, const T* g, T* m, T* v, i64 n, Coef<T> k) {
  dense_body<T, W::value, true>(p, g, m, v, n, k);
}
template <class T, class W>
FS_INLINE void dense_tail_body(T* p, const T* g, T* m, T* v, i64 n, Coef<T> k) {
  dense_body<T, W::value, false>(p, g, m, v, n, k);
}
FS_MULTIVERSION(dense_blocks, dense_blocks_body)
FS_MULTIVERSION(dense_tail, dense_tail_body)

// Threads take chunks of CHUNK elements dynamically (parallel_chunks, common.h): a worker
// that joins late costs the chunk it holds, not half the work.
// Which thread updates an element never changes its value, so this stays bitwise stable.
constexpr i64 CHUNK = 1 << 14;

template <class T, int WD, class W = std::integral_constant<int, WD>>
void dense_kernel(T* p, const T* g, T* m, T* v, i64 n, Coef<T> k) {
  const i64 nb = n / BLK;
  const i64 cb = CHUNK / BLK, nchunks = (nb + cb - 1) / cb;
  const int nt = n >= PAR_MIN ? get_num_threads() : 1;
  parallel_chunks(nchunks, nt, [&](i64 c) {
    const i64 b0 = c * cb, b1 = std::min(nb, b0 + cb);
    dense_blocks<T, W>(p + b0 * BLK, g + b0 * BLK, m + b0 * BLK, v + b0 * BLK, (b1 - b0) * BLK, k);
  });
  const i64 done = nb * BLK;
  if (done < n) dense_tail<T, W>(p + done, g + done, m + done, v + done, n - done, k);
}

// Lazy Adam: rows[i0:i1) of the (V, D) table, grads in values[i0:i1).  Every row runs the
// same D-wide loop, so the result does not depend on which thread owns it.
template <class T, class W, class I>
FS_INLINE void sparse_body(T* FS_RESTRICT p, const I* FS_RESTRICT rows, const T* FS_RESTRICT vals, T* FS_RESTRICT m,
                           T* FS_RESTRICT v, i64 D, i64 i0, i64 i1, Coef<T> k) {
  for (i64 i = i0; i < i1; ++i) {
    const i64 off = static_cast<i64>(rows[i]) * D;
    if (i + 2 < i1) {  // rows are scattered: fetch the start of the row after next
      const i64 nx = static_cast<i64>(rows[i + 2]) * D;
      __builtin_prefetch(p + nx, 1);
      __builtin_prefetch(m + nx, 1);
      __builtin_prefetch(v + nx, 1);
    }
    T* FS_RESTRICT pr = p + off;
    T* FS_RESTRICT mr = m + off;
    T* FS_RESTRICT vr = v + off;
    const T* FS_RESTRICT gr = vals + i * D;
#pragma omp simd
    for (i64 j = 0; j < D; ++j) adam_elem<T, W::value>(pr[j], gr[j], mr[j], vr[j], k);
  }
}
FS_MULTIVERSION(sparse_rows, sparse_body)

template <class T, int WD, class I, class W = std::integral_constant<int, WD>>
void sparse_kernel(T* p, const I* rows, const T* vals, T* m, T* v, i64 R, i64 D, Coef<T> k) {
  // Dynamic chunks of rows, as in dense_kernel.
  const int nt = R * D >= PAR_MIN ? get_num_threads() : 1;
  const i64 cr = std::max<i64>(1, CHUNK / 4 / std::max<i64>(D, 1)), nchunks = (R + cr - 1) / cr;
  parallel_chunks(nchunks, nt, [&](i64 ch) {
    sparse_rows<T, W, I>(p, rows, vals, m, v, D, ch * cr, std::min(R, ch * cr + cr), k);
  });
}

// Dense Adam with a row-sparse gradient (SparseRows: the gradient is zero outside rows):
// every row of the (V, D) table is updated, exactly as adam_step on the densified gradient,
// but the (V, D) gradient is never built -- for an embedding table that saves writing,
// clearing and re-reading V * D values per step.  Rows without a gradient read a shared row
// of zeros, so each element runs the same instructions as in dense_body: bitwise equal.
template <class T, class W, class I>
FS_INLINE void rows_dense_body(T* FS_RESTRICT p, const I* FS_RESTRICT rows, const T* FS_RESTRICT vals,
                               T* FS_RESTRICT m, T* FS_RESTRICT v, const T* FS_RESTRICT zeros, i64 D, i64 r0,
                               i64 r1, i64 k, i64 R, Coef<T> c) {
  for (i64 r = r0; r < r1; ++r) {
    const T* FS_RESTRICT g = zeros;
    if (k < R && static_cast<i64>(rows[k]) == r) g = vals + (k++) * D;
    T* FS_RESTRICT pr = p + r * D;
    T* FS_RESTRICT mr = m + r * D;
    T* FS_RESTRICT vr = v + r * D;
#pragma omp simd
    for (i64 j = 0; j < D; ++j) adam_elem<T, W::value>(pr[j], g[j], mr[j], vr[j], c);
  }
}
FS_MULTIVERSION(rows_dense, rows_dense_body)

template <class T, int WD, class I, class W = std::integral_constant<int, WD>>
void rows_dense_kernel(T* p, const I* rows, const T* vals, T* m, T* v, const T* zeros, i64 V, i64 R, i64 D,
                       Coef<T> c) {
  const int nt = V * D >= PAR_MIN ? get_num_threads() : 1;
  const i64 cr = std::max<i64>(1, CHUNK / std::max<i64>(D, 1)), nchunks = (V + cr - 1) / cr;  // rows per chunk
  parallel_chunks(nchunks, nt, [&](i64 ch) {
    const i64 r0 = ch * cr, r1 = std::min(V, r0 + cr);
    // First listed row >= r0 (rows are strictly increasing: checked before the region).
    const i64 k = std::lower_bound(rows, rows + R, static_cast<I>(r0)) - rows;
    rows_dense<T, W, I>(p, rows, vals, m, v, zeros, D, r0, r1, k, R, c);
  });
}

// Status of the rows check: 0 ok, 1 + i: rows[i] outside [0, V), -(1 + i): rows[i] <=
// rows[i - 1].  The first position where anything is wrong wins (range before order).
template <class I>
i64 check_rows(const I* rows, i64 R, i64 V) {
  for (i64 i = 0; i < R; ++i) {
    const i64 r = static_cast<i64>(rows[i]);
    if (r < 0 || r >= V) return 1 + i;
    if (i > 0 && r <= static_cast<i64>(rows[i - 1])) return -(1 + i);
  }
  return 0;
}

template <class T, class F>
void with_decay(int mode, F&& f) {
  switch (mode) {
    case L2: f(std::integral_constant<int, L2>{}); break;
    case DECOUPLED: f(std::integral_constant<int, DECOUPLED>{}); break;
    default: f(std::integral_constant<int, NONE>{}); break;
  }
}

// double -> T rounding to +-inf past T's range (a plain cast of an out-of-range double to
// float is undefined behaviour; numpy's float32(1e308) is inf, and every backend must agree).
template <class T>
T narrow(double x) {
  if (std::is_same<T, float>::value && std::isfinite(x) && std::fabs(x) > std::numeric_limits<float>::max())
    return std::copysign(std::numeric_limits<T>::infinity(), static_cast<T>(x > 0 ? 1 : -1));
  return static_cast<T>(x);
}

template <class T>
Coef<T> make_coef(double beta1, double beta2, double alpha, double eps, double wd, double decay) {
  return Coef<T>{narrow<T>(1.0 - beta1), narrow<T>(beta2), narrow<T>(1.0 - beta2),
                 narrow<T>(alpha),       narrow<T>(eps),   narrow<T>(wd),
                 narrow<T>(decay),       narrow<T>(beta1)};
}

const char* const OP = "adam_step";
const char* const OPS = "sparse_adam_step";

void same_size(const char* op, const py::array& a, const py::array& b, const char* name) {
  if (a.ndim() != b.ndim()) shape_error(op, std::string("argument '") + name + "' must have the shape of param");
  for (int d = 0; d < a.ndim(); ++d)
    if (a.shape(d) != b.shape(d)) shape_error(op, std::string("argument '") + name + "' must have the shape of param");
}

// The shared body of sparse_adam_step and adam_step_rows (one (V, D) table, a row list and
// its values): shape and dtype checks, the rows status (nothing written on a bad row), then
// run(p, rows, values, m, v, V, R, D, coef, decay mode) without the GIL.
template <class Run>
i64 rows_step(const char* op, const char* not_2d, const py::array& param, const py::array& rows,
              const py::array& values, const py::array& exp_avg, const py::array& exp_avg_sq, double beta1,
              double beta2, double alpha, double eps, double wd, double decay, int mode, Run&& run) {
  if (param.ndim() != 2) shape_error(op, not_2d);
  same_size(op, param, exp_avg, "m");
  same_size(op, param, exp_avg_sq, "v");
  const i64 V = dim(param, 0), D = dim(param, 1);
  if (rows.ndim() != 1) shape_error(op, "rows must be 1-D");
  const i64 R = dim(rows, 0);
  if (values.ndim() != 2 || dim(values, 0) != R || dim(values, 1) != D) shape_error(op, "values must be (len(rows), D)");
  return with_float(param, op, "param", [&](auto tt) -> i64 {
    using T = decltype(tt);
    T* p = mptr<T>(param, dt_of<T>(), op, "param");
    const T* g = cptr<T>(values, dt_of<T>(), op, "values");
    T* mm = mptr<T>(exp_avg, dt_of<T>(), op, "m");
    T* vv = mptr<T>(exp_avg_sq, dt_of<T>(), op, "v");
    const Coef<T> k = make_coef<T>(beta1, beta2, alpha, eps, wd, decay);
    return with_index(rows, op, "rows", [&](auto ii) -> i64 {
      using I = decltype(ii);
      const I* r = cptr<I>(rows, dt_of<I>(), op, "rows");
      py::gil_scoped_release nogil;
      const i64 st = check_rows(r, R, V);
      if (st) return st;  // nothing written
      with_decay<T>(mode, [&](auto wdm) { run(p, r, g, mm, vv, V, R, D, k, wdm); });
      return 0;
    });
  });
}

}  // namespace

void bind_adam(py::module_& m) {
  m.def(
      "adam_step",
      [](py::array param, py::array grad, py::array exp_avg, py::array exp_avg_sq, double beta1, double beta2,
         double alpha, double eps, double wd, double decay, int mode) {
        same_size(OP, param, grad, "grad");
        same_size(OP, param, exp_avg, "m");
        same_size(OP, param, exp_avg_sq, "v");
        const i64 n = static_cast<i64>(param.size());
        with_float(param, OP, "param", [&](auto tt) {
          using T = decltype(tt);
          T* p = mptr<T>(param, dt_of<T>(), OP, "param");
          const T* g = cptr<T>(grad, dt_of<T>(), OP, "grad");
          T* mm = mptr<T>(exp_avg, dt_of<T>(), OP, "m");
          T* vv = mptr<T>(exp_avg_sq, dt_of<T>(), OP, "v");
          const Coef<T> k = make_coef<T>(beta1, beta2, alpha, eps, wd, decay);
          py::gil_scoped_release nogil;
          with_decay<T>(mode, [&](auto wdm) { dense_kernel<T, decltype(wdm)::value>(p, g, mm, vv, n, k); });
        });
      },
      py::arg("param"), py::arg("grad"), py::arg("m"), py::arg("v"), py::arg("beta1"), py::arg("beta2"),
      py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"), py::arg("decay"), py::arg("mode"),
      "fused in-place Adam step: p -= alpha * m / (sqrt(v) + eps); mode 0 none, 1 L2, 2 decoupled");

  m.def(
      "adam_step_multi",
      [](py::list params, py::list grads, py::list exp_avgs, py::list exp_avg_sqs, double beta1, double beta2,
         double alpha, double eps, double wd, double decay, int mode) {
        const size_t n = params.size();
        if (grads.size() != n || exp_avgs.size() != n || exp_avg_sqs.size() != n)
          shape_error(OP, "the lists param, grad, m, v must have the same length");
        if (n == 0) return;
        py::array first = params[0].cast<py::array>();
        with_float(first, OP, "param", [&](auto tt) {
          using T = decltype(tt);
          struct Job { T* p; const T* g; T* m; T* v; i64 n; };
          std::vector<Job> jobs;
          jobs.reserve(n);
          for (size_t i = 0; i < n; ++i) {
            py::array pa = params[i].cast<py::array>(), ga = grads[i].cast<py::array>();
            py::array ma = exp_avgs[i].cast<py::array>(), va = exp_avg_sqs[i].cast<py::array>();
            same_size(OP, pa, ga, "grad");
            same_size(OP, pa, ma, "m");
            same_size(OP, pa, va, "v");
            jobs.push_back(Job{mptr<T>(pa, dt_of<T>(), OP, "param"), cptr<T>(ga, dt_of<T>(), OP, "grad"),
                               mptr<T>(ma, dt_of<T>(), OP, "m"), mptr<T>(va, dt_of<T>(), OP, "v"),
                               static_cast<i64>(pa.size())});
          }
          const Coef<T> k = make_coef<T>(beta1, beta2, alpha, eps, wd, decay);
          py::gil_scoped_release nogil;
          with_decay<T>(mode, [&](auto wdm) {
            for (const Job& j : jobs) dense_kernel<T, decltype(wdm)::value>(j.p, j.g, j.m, j.v, j.n, k);
          });
        });
      },
      py::arg("params"), py::arg("grads"), py::arg("m"), py::arg("v"), py::arg("beta1"), py::arg("beta2"),
      py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"), py::arg("decay"), py::arg("mode"),
      "adam_step over lists of tensors (one dtype) in one call; each tensor exactly as adam_step");

  m.def(
      "adam_step_rows",
      [](py::array param, py::array rows, py::array values, py::array exp_avg, py::array exp_avg_sq, double beta1,
         double beta2, double alpha, double eps, double wd, double decay, int mode) -> i64 {
        return rows_step(OP, "a SparseRows gradient needs a 2-D (V, D) param", param, rows, values, exp_avg,
                         exp_avg_sq, beta1, beta2, alpha, eps, wd, decay, mode,
                         [](auto* p, auto* r, auto* g, auto* mm, auto* vv, i64 V, i64 R, i64 D, auto k, auto wdm) {
                           using T = std::remove_pointer_t<decltype(p)>;
                           using I = std::remove_cv_t<std::remove_pointer_t<decltype(r)>>;
                           const std::vector<T> zeros(static_cast<size_t>(D), T(0));
                           rows_dense_kernel<T, decltype(wdm)::value, I>(p, r, g, mm, vv, zeros.data(), V, R, D, k);
                         });
      },
      py::arg("param"), py::arg("rows"), py::arg("values"), py::arg("m"), py::arg("v"), py::arg("beta1"),
      py::arg("beta2"), py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"), py::arg("decay"), py::arg("mode"),
      "dense Adam over every row of param with the gradient zero outside rows; status as sparse_adam_step");

  m.def(
      "sparse_adam_step",
      [](py::array param, py::array rows, py::array values, py::array exp_avg, py::array exp_avg_sq, double beta1,
         double beta2, double alpha, double eps, double wd, double decay, int mode) -> i64 {
        return rows_step(OPS, "param must be 2-D (V, D)", param, rows, values, exp_avg, exp_avg_sq, beta1, beta2,
                         alpha, eps, wd, decay, mode,
                         [](auto* p, auto* r, auto* g, auto* mm, auto* vv, i64, i64 R, i64 D, auto k, auto wdm) {
                           using T = std::remove_pointer_t<decltype(p)>;
                           using I = std::remove_cv_t<std::remove_pointer_t<decltype(r)>>;
                           sparse_kernel<T, decltype(wdm)::value, I>(p, r, g, mm, vv, R, D, k);
                         });
      },
      py::arg("param"), py::arg("rows"), py::arg("values"), py::arg("m"), py::arg("v"), py::arg("beta1"),
      py::arg("beta2"), py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"), py::arg("decay"), py::arg("mode"),
      "lazy Adam on rows (strictly increasing); returns 0, 1 + i (rows[i] out of range) or -(1 + i) (not increasing)");
}

}  // namespace fastscale
