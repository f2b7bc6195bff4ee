// masked_mean_pool: out[b] = mean of x[b, t] over the t with mask[b, t]; an all-false row
// gives zeros.  Backward: dx[b, t] = mask[b, t] * dout[b] / count(b).
//
// Forward: OpenMP over rows b; a row's D columns go in chunks of CH values whose
// accumulators stay in registers while the kept positions stream through, in t order, so
// the result is bitwise the same for any thread count.  Masked-out positions are never
// read (a NaN there does not leak into the mean).  Backward: OpenMP over rows b; the first
// kept position gets dout[b] / count, the others a copy of it, the rest zeros.
#include <omp.h>

#include <cstdint>
#include <cstring>

#include "common.h"

namespace fastscale {
namespace {

constexpr int CH = 64;  // accumulator chunk (values): 4 zmm / 8 ymm registers
using u8 = std::uint8_t;

FS_INLINE i64 count_row(const u8* m, i64 T) {
  i64 n = 0;
  for (i64 t = 0; t < T; ++t) n += (m[t] != 0);
  return n;
}

// Sum over kept t of x[t, d0:d0+W] into o[d0:d0+W].  FULL: W == CH at compile time so acc[]
// lives in registers.
template <class T, bool FULL>
FS_INLINE void pool_chunk(const T* FS_RESTRICT x, i64 D, i64 d0, int W, const u8* FS_RESTRICT m, i64 Tlen,
                          T* FS_RESTRICT o) {
  const int w = FULL ? CH : W;
  T acc[CH];
#pragma GCC unroll 64
  for (int j = 0; j < CH; ++j) acc[j] = T(0);
  for (i64 t = 0; t < Tlen; ++t) {
    if (!m[t]) continue;
    const T* FS_RESTRICT r = x + t * D + d0;
    if (FULL) {
#pragma GCC unroll 64
      for (int j = 0; j < CH; ++j) acc[j] += r[j];
    } else {
      for (int j = 0; j < w; ++j) acc[j] += r[j];
    }
  }
  if (FULL) {
#pragma GCC unroll 64
    for (int j = 0; j < CH; ++j) o[d0 + j] = acc[j];
  } else {
    for (int j = 0; j < w; ++j) o[d0 + j] = acc[j];
  }
}

template <class T>
FS_INLINE void forward_row_body(const T* x, const u8* mask, i64 Tlen, i64 D, i64 b, T* out) {
  const T* xb = x + b * Tlen * D;
  const u8* mb = mask + b * Tlen;
  T* o = out + b * D;
  i64 d0 = 0;
  for (; d0 + CH <= D; d0 += CH) pool_chunk<T, true>(xb, D, d0, CH, mb, Tlen, o);
  if (d0 < D) pool_chunk<T, false>(xb, D, d0, static_cast<int>(D - d0), mb, Tlen, o);
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
  for (i64 t = 0; t < Tlen; ++t) {
    T* FS_RESTRICT r = xb + t * D;
    if (!mb[t]) {
      std::memset(static_cast<void*>(r), 0, static_cast<size_t>(D) * sizeof(T));
    } else if (first) {
      std::memcpy(static_cast<void*>(r), first, static_cast<size_t>(D) * sizeof(T));
    } else {
      for (i64 j = 0; j < D; ++j) r[j] = g[j] / c;
      first = r;
    }
  }
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
