// bce_with_logits: mean binary cross-entropy on logits and its gradient, in one pass.
//
//   loss_i = max(z, 0) - z*y + log1p(exp(-|z|))      (never exp of a positive number)
//   dz_i   = (sigmoid(z) - y) / N                    (sigmoid from the same exp(-|z|))
//
// The loss is summed in float64.  The N elements are cut into at most NCHUNK chunks whose
// bounds depend only on N; each chunk is summed in order and the partial sums are added in
// chunk order, so the result is bitwise the same for any thread count.  Targets outside
// [0, 1] (NaN included) are reported by position; the caller discards dlogits then.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "common.h"

namespace fastscale {
namespace {

constexpr i64 NCHUNK = 64;
constexpr i64 MIN_CHUNK = 2048;
constexpr i64 PAR_MIN = 16384;  // elements below which one thread beats a fork

template <class T>
FS_INLINE void chunk_body(const T* z, const T* y, i64 s, i64 e, T n, T* g, double* part, i64* bad) {
  double acc = 0.0;
  i64 first_bad = -1;
  for (i64 i = s; i < e; ++i) {
    const T zi = z[i], yi = y[i];
    if (!(yi >= T(0) && yi <= T(1)) && first_bad < 0) first_bad = i;
    const T ex = std::exp(-std::fabs(zi));
    const double li = static_cast<double>(zi > T(0) ? zi : T(0)) - static_cast<double>(zi) * static_cast<double>(yi) +
                      static_cast<double>(std::log1p(ex));
    acc += li;
    const T sig = zi >= T(0) ? T(1) / (T(1) + ex) : ex / (T(1) + ex);
    g[i] = (sig - yi) / n;
  }
  *part = acc;
  *bad = first_bad;
}
FS_MULTIVERSION(bce_chunk, chunk_body)

// Returns the flat position of the first bad target, or -1; *loss = mean loss.
template <class T>
i64 bce_kernel(const T* z, const T* y, i64 N, T* g, double* loss) {
  const i64 csize = std::max(MIN_CHUNK, (N + NCHUNK - 1) / NCHUNK);
  const i64 nch = (N + csize - 1) / csize;
  double part[NCHUNK];
  i64 bad[NCHUNK];
#pragma omp parallel for schedule(static) num_threads(get_num_threads()) if (N >= PAR_MIN)
  for (i64 c = 0; c < nch; ++c)
    bce_chunk<T>(z, y, c * csize, std::min(N, c * csize + csize), static_cast<T>(N), g, &part[c], &bad[c]);
  double s = 0.0;
  for (i64 c = 0; c < nch; ++c) s += part[c];
  *loss = s / static_cast<double>(N);
  for (i64 c = 0; c < nch; ++c)
    if (bad[c] >= 0) return bad[c];
  return -1;
}

const char* const OP = "bce_with_logits";

}  // namespace

void bind_bce_with_logits(py::module_& m) {
  m.def(
      "bce_with_logits",
      [](py::array logits, py::array targets, py::array dlogits) -> std::pair<i64, double> {
        const i64 N = static_cast<i64>(logits.size());
        if (static_cast<i64>(targets.size()) != N || static_cast<i64>(dlogits.size()) != N)
          shape_error(OP, "logits, targets and dlogits must have the same size");
        if (N == 0) shape_error(OP, "logits must not be empty");
        return with_float(logits, OP, "logits", [&](auto tt) -> std::pair<i64, double> {
          using T = decltype(tt);
          const T* z = cptr<T>(logits, dt_of<T>(), OP, "logits");
          const T* y = cptr<T>(targets, dt_of<T>(), OP, "targets");
          T* g = mptr<T>(dlogits, dt_of<T>(), OP, "dlogits");
          double loss = 0.0;
          i64 bad;
          {
            py::gil_scoped_release nogil;
            bad = bce_kernel<T>(z, y, N, g, &loss);
          }
          return {bad, loss};
        });
      },
      py::arg("logits"), py::arg("targets"), py::arg("dlogits"),
      "(first bad target position or -1, mean loss); writes dlogits = (sigmoid(logits) - targets) / N");
}

}  // namespace fastscale
