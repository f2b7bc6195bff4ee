// masked_mean_pool: out[b] = mean of x[b, t] over the t with mask[b, t]; an all-false row
// gives zeros.  Backward: dx[b, t] = mask[b, t] * dout[b] / count(b).
//
// Forward: OpenMP over rows b; each kept position's row is added, in t order, into the
// output row, so the result is bitwise the same for any thread count.  Masked-out
// positions are never read (a NaN there does not leak into the mean).  Backward: OpenMP
// over rows b; the first kept position gets dout[b] / count, the others a copy of it, and
// each run of masked-out positions is cleared with one memset (padding comes in long runs).
#include <omp.h>

#include <cstdint>
#include <cstring>

#include "common.h"

namespace fastscale {
namespace {

using u8 = std::uint8_t;

FS_INLINE i64 count_row(const u8* m, i64 T) {
  i64 n = 0;
  for (i64 t = 0; t < T; ++t) n += (m[t] != 0);
  return n;
}

template <class T>
FS_INLINE void forward_row_body(const T* x, const u8* mask, i64 Tlen, i64 D, i64 b, T* out) {
  const T* xb = x + b * Tlen * D;
  const u8* mb = mask + b * Tlen;
  T* o = out + b * D;
  // One sequential pass over each kept row, added into the output row (which stays in L1).
  // Accumulating column chunks in registers instead would read every row once per chunk:
  // measured 1.4 ms against 0.42 ms here for (64, 2500, 128) with ~230 kept rows per b.
  for (i64 j = 0; j < D; ++j) o[j] = T(0);
  for (i64 t = 0; t < Tlen; ++t) {
    if (!mb[t]) continue;
    const T* FS_RESTRICT r = xb + t * D;
    T* FS_RESTRICT oo = o;
    for (i64 j = 0; j < D; ++j) oo[j] += r[j];
  }
  const i64 n = count_row(mb, Tlen);
  if (n == 0) {
    for (i64 j = 0; j < D; ++j) o[j] = T(0);  // never 0/0
  } else {
    const T c = static_cast<T>(n);
    for (i64 j = 0; j < D; ++j) o[j] /= c;
  }
}
FS_MULTIVERSION(forward_row, forward_row_body)

template <class T>
FS_INLINE void backward_row_body(const T* dout, const u8* mask, i64 Tlen, i64 D, i64 b, T* dx) {
  const u8* mb = mask + b * Tlen;
  const T* FS_RESTRICT g = dout + b * D;
  T* FS_RESTRICT xb = dx + b * Tlen * D;
  const T c = static_cast<T>(count_row(mb, Tlen));
  const T* first = nullptr;  // the row already holding dout[b] / count
  i64 zero_from = 0;          // start of the current run of masked-out positions
  for (i64 t = 0; t < Tlen; ++t) {
    if (!mb[t]) continue;
    if (zero_from < t)
      std::memset(static_cast<void*>(xb + zero_from * D), 0, static_cast<size_t>((t - zero_from) * D) * sizeof(T));
    zero_from = t + 1;
    T* FS_RESTRICT r = xb + t * D;
    if (first) {
      std::memcpy(static_cast<void*>(r), first, static_cast<size_t>(D) * sizeof(T));
    } else {
      for (i64 j = 0; j < D; ++j) r[j] = g[j] / c;
      first = r;
    }
  }
  if (zero_from < Tlen)
    std::memset(static_cast<void*>(xb + zero_from * D), 0, static_cast<size_t>((Tlen - zero_from) * D) * sizeof(T));
}
FS_MULTIVERSION(backward_row, backward_row_body)

template <class T>
void forward_kernel(const T* x, const u8* mask, i64 B, i64 Tlen, i64 D, T* out) {
#pragma omp parallel for schedule(dynamic, 1) if (B > 1) num_threads(get_num_threads())
  for (i64 b = 0; b < B; ++b) forward_row<T>(x, mask, Tlen, D, b, out);
}

template <class T>
void backward_kernel(const T* dout, const u8* mask, i64 B, i64 Tlen, i64 D, T* dx) {
#pragma omp parallel for schedule(dynamic, 1) if (B > 1) num_threads(get_num_threads())
  for (i64 b = 0; b < B; ++b) backward_row<T>(dout, mask, Tlen, D, b, dx);
}

const char* const OP = "masked_mean_pool";
const char* const OPB = "masked_mean_pool_backward";

}  // namespace

void bind_masked_mean_pool(py::module_& m) {
  m.def(
      "masked_mean_pool_forward",
      [](py::array x, py::array mask, py::array out) {
        if (x.ndim() != 3 || mask.ndim() != 2 || out.ndim() != 2) shape_error(OP, "x, mask, out must be 3-D, 2-D, 2-D");
        const i64 B = dim(x, 0), Tlen = dim(x, 1), D = dim(x, 2);
        if (dim(mask, 0) != B || dim(mask, 1) != Tlen) shape_error(OP, "mask must be (B, T)");
        if (dim(out, 0) != B || dim(out, 1) != D) shape_error(OP, "out must be (B, D)");
        const u8* mk = cptr<u8>(mask, Dt::u8, OP, "mask");
        with_float(x, OP, "x", [&](auto tt) {
          using T = decltype(tt);
          const T* xp = cptr<T>(x, dt_of<T>(), OP, "x");
          T* o = mptr<T>(out, dt_of<T>(), OP, "out");
          py::gil_scoped_release nogil;
          forward_kernel<T>(xp, mk, B, Tlen, D, o);
        });
      },
      py::arg("x"), py::arg("mask"), py::arg("out"), "out (B, D) = mean of x[b, t] over the t with mask[b, t]");

  m.def(
      "masked_mean_pool_backward",
      [](py::array dout, py::array mask, py::array dx) {
        if (dout.ndim() != 2 || mask.ndim() != 2 || dx.ndim() != 3)
          shape_error(OPB, "dout, mask, dx must be 2-D, 2-D, 3-D");
        const i64 B = dim(dx, 0), Tlen = dim(dx, 1), D = dim(dx, 2);
        if (dim(mask, 0) != B || dim(mask, 1) != Tlen) shape_error(OPB, "mask must be (B, T)");
        if (dim(dout, 0) != B || dim(dout, 1) != D) shape_error(OPB, "dout must be (B, D)");
        const u8* mk = cptr<u8>(mask, Dt::u8, OPB, "mask");
        with_float(dout, OPB, "dout", [&](auto tt) {
          using T = decltype(tt);
          const T* g = cptr<T>(dout, dt_of<T>(), OPB, "dout");
          T* o = mptr<T>(dx, dt_of<T>(), OPB, "out");
          py::gil_scoped_release nogil;
          backward_kernel<T>(g, mk, B, Tlen, D, o);
        });
      },
      py::arg("dout"), py::arg("mask"), py::arg("dx"), "dx (B, T, D) = mask[b, t] * dout[b] / count(b)");
}

}  // namespace fastscale
