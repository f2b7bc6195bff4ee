// embedding: out[i, :] = weight[ids[i], :] for every id (ids of any shape, flattened to N).
//
// Forward: OpenMP over chunks of ids; each row is a straight vector copy.  Backward (dense):
// threads own disjoint blocks of 16 table rows; each zeroes its blocks and adds dout rows
// into them in position order, so there is no race and the result is bitwise the same for
// any thread count.  Backward (sparse): the unique sorted rows first (a mark scratch, O(N)),
// then the same owner scheme over slots of the compact (U, D) values.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "common.h"

namespace fastscale {
namespace {

constexpr i64 CHUNK = 256;     // forward: ids per OpenMP work item

// Copies the rows of ids[i0:i1] into out[i0:i1].  Multiversioned so the copy loop is
// vectorised for the ISA chosen at run time.  No software prefetch: the origin's table
// (10k x 128 floats, 5 MB) sits in L2/L3, and prefetching the row PF ids ahead made the
// (64 reviews, ~17k ids) batch 40% slower (0.74 ms against 0.52 ms, one thread).
template <class T, class I>
FS_INLINE void gather_body(const T* FS_RESTRICT weight, i64 D, const I* FS_RESTRICT ids, i64 i0, i64 i1,
                           T* FS_RESTRICT out) {
  for (i64 i = i0; i < i1; ++i) {
    const T* FS_RESTRICT r = weight + static_cast<i64>(ids[i]) * D;
    T* FS_RESTRICT o = out + i * D;
    for (i64 j = 0; j < D; ++j) o[j] = r[j];
  }
}
FS_MULTIVERSION(gather_rows, gather_body)

template <class T, class I>
void forward_kernel(const T* weight, i64 D, const I* ids, i64 N, T* out) {
  const i64 nchunks = (N + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (nchunks > 1) num_threads(get_num_threads())
  for (i64 c = 0; c < nchunks; ++c) gather_rows<T>(weight, D, ids, c * CHUNK, std::min(N, (c + 1) * CHUNK), out);
}


// Thread t of nt: zero its blocks of grad (R, D) and add dout[i] into row slot(ids[i]) for
// every i in position order whose row it owns.  slot == nullptr: the row is the id itself
// (dense); otherwise mark[id] - 1 (sparse, compact rows).
template <class T, class I>
FS_INLINE void backward_body(const T* FS_RESTRICT dout, i64 D, const I* FS_RESTRICT ids, i64 N,
                             const std::int32_t* FS_RESTRICT mark, T* FS_RESTRICT grad, i64 R, int t, int nt) {
  for (i64 blk = t; (blk << OWN_SHIFT) < R; blk += nt) {
    const i64 r0 = blk << OWN_SHIFT, r1 = std::min(R, r0 + (i64(1) << OWN_SHIFT));
    std::memset(static_cast<void*>(grad + r0 * D), 0, static_cast<size_t>((r1 - r0) * D) * sizeof(T));
  }
  for (i64 i = 0; i < N; ++i) {
    const i64 id = ids[i];
    const i64 row = mark ? static_cast<i64>(mark[id]) - 1 : id;
    if (!owns(row, t, nt)) continue;
    const T* FS_RESTRICT g = dout + i * D;
    T* FS_RESTRICT r = grad + row * D;
    for (i64 j = 0; j < D; ++j) r[j] += g[j];
  }
}
FS_MULTIVERSION(backward_thread, backward_body)

template <class T, class I>
void backward_kernel(const T* dout, i64 D, const I* ids, i64 N, const std::int32_t* mark, T* grad, i64 R) {
  // Every thread scans all N ids (cheap next to the D-wide row adds it skips); with few
  // rows a second thread would only contend for the same cache lines.
  const int nt = R > (i64(1) << OWN_SHIFT) ? get_num_threads() : 1;
  parallel_chunks(nt, nt, [&](i64 t) {  // one pool chunk per owner, as embedding_bag's
    backward_thread<T>(dout, D, ids, N, mark, grad, R, static_cast<int>(t), nt);
  });
}

// Unique sorted ids into rows[0:U]; leaves mark[row] = 1 + slot.  mark must be all zero on
// entry (the values call clears it again).
template <class I>
i64 unique_rows(const I* ids, i64 N, std::int32_t* mark, i64 V, std::int64_t* rows) {
  i64 U = 0;
  for (i64 i = 0; i < N; ++i) {
    const i64 id = ids[i];
    if (mark[id]) continue;
    mark[id] = 1;
    rows[U++] = id;
  }
  return sort_marked_rows(mark, V, rows, U);
}

// ------------------------------------------------------------------ bindings
const char* const OP = "embedding";
const char* const OPB = "embedding_backward";

// Validates ids against V in parallel; status per common.h.
template <class I>
i64 check_ids(const I* ids, i64 N, i64 V) {
  py::gil_scoped_release nogil;
  const i64 bad = first_bad_id(ids, N, V);
  return bad >= 0 ? status_bad_id(bad) : 0;
}

}  // namespace

void bind_embedding(py::module_& m) {
  m.def(
      "embedding_forward",
      [](py::array weight, py::array ids, py::array out) -> i64 {
        if (weight.ndim() != 2 || out.ndim() != 2) shape_error(OP, "weight and out must be 2-D");
        const i64 V = dim(weight, 0), D = dim(weight, 1), N = static_cast<i64>(ids.size());
        if (dim(out, 0) != N || dim(out, 1) != D) shape_error(OP, "out must be (ids.size, D)");
        return with_float(weight, OP, "weight", [&](auto tt) -> i64 {
          using T = decltype(tt);
          const T* w = cptr<T>(weight, dt_of<T>(), OP, "weight");
          T* o = mptr<T>(out, dt_of<T>(), OP, "out");
          return with_index(ids, OP, "ids", [&](auto ii) -> i64 {
            using I = decltype(ii);
            const I* ip = cptr<I>(ids, dt_of<I>(), OP, "ids");
            if (const i64 st = check_ids(ip, N, V)) return st;
            py::gil_scoped_release nogil;
            forward_kernel<T>(w, D, ip, N, o);
            return 0;
          });
        });
      },
      py::arg("weight"), py::arg("ids"), py::arg("out"),
      "out (N, D) = weight[ids] for C-contiguous ids of any shape (N = ids.size); returns a status "
      "(0 ok, >0 bad id at flat position status - 1); nothing is written unless it is 0");

  m.def(
      "embedding_backward_dense",
      [](py::array dout, py::array ids, py::array grad) -> i64 {
        if (dout.ndim() != 2 || grad.ndim() != 2) shape_error(OPB, "dout and grad must be 2-D");
        const i64 V = dim(grad, 0), D = dim(grad, 1), N = static_cast<i64>(ids.size());
        if (dim(dout, 0) != N || dim(dout, 1) != D) shape_error(OPB, "dout must be (ids.size, D)");
        return with_float(dout, OPB, "dout", [&](auto tt) -> i64 {
          using T = decltype(tt);
          const T* g = cptr<T>(dout, dt_of<T>(), OPB, "dout");
          T* gr = mptr<T>(grad, dt_of<T>(), OPB, "out");
          return with_index(ids, OPB, "ids", [&](auto ii) -> i64 {
            using I = decltype(ii);
            const I* ip = cptr<I>(ids, dt_of<I>(), OPB, "ids");
            if (const i64 st = check_ids(ip, N, V)) return st;
            if (D == 0) return 0;  // nothing to write; V may be huge (the row loop would spin)
            py::gil_scoped_release nogil;
            backward_kernel<T>(g, D, ip, N, nullptr, gr, V);
            return 0;
          });
        });
      },
      py::arg("dout"), py::arg("ids"), py::arg("grad"),
      "grad (V, D) = sum of dout rows per id; returns a status as embedding_forward");

  m.def(
      "embedding_backward_rows",
      [](py::array ids, py::array mark, py::array rows) -> std::pair<i64, i64> {
        const i64 V = static_cast<i64>(mark.size()), N = static_cast<i64>(ids.size());
        std::int32_t* mk = mptr<std::int32_t>(mark, Dt::i32, OPB, "mark");
        std::int64_t* rw = mptr<std::int64_t>(rows, Dt::i64, OPB, "rows");
        if (static_cast<i64>(rows.size()) < N) shape_error(OPB, "rows must hold ids.size entries");
        return with_index(ids, OPB, "ids", [&](auto ii) -> std::pair<i64, i64> {
          using I = decltype(ii);
          const I* ip = cptr<I>(ids, dt_of<I>(), OPB, "ids");
          if (const i64 st = check_ids(ip, N, V)) return {st, 0};
          py::gil_scoped_release nogil;
          return {0, unique_rows(ip, N, mk, V, rw)};
        });
      },
      py::arg("ids"), py::arg("mark"), py::arg("rows"),
      "(status, U): validates ids, writes the U unique sorted rows, leaves mark[row] = 1 + slot");

  m.def(
      "embedding_backward_values",
      [](py::array dout, py::array ids, py::array mark, py::array rows, py::array values) {
        if (dout.ndim() != 2 || values.ndim() != 2) shape_error(OPB, "dout and values must be 2-D");
        const i64 D = dim(dout, 1), U = dim(values, 0), N = static_cast<i64>(ids.size());
        if (dim(values, 1) != D || static_cast<i64>(rows.size()) != U) shape_error(OPB, "values must be (U, D)");
        if (dim(dout, 0) != N) shape_error(OPB, "dout must be (ids.size, D)");
        std::int32_t* mk = mptr<std::int32_t>(mark, Dt::i32, OPB, "mark");
        const std::int64_t* rw = cptr<std::int64_t>(rows, Dt::i64, OPB, "rows");
        with_float(dout, OPB, "dout", [&](auto tt) {
          using T = decltype(tt);
          const T* g = cptr<T>(dout, dt_of<T>(), OPB, "dout");
          T* vals = mptr<T>(values, dt_of<T>(), OPB, "values");
          with_index(ids, OPB, "ids", [&](auto ii) {
            using I = decltype(ii);
            const I* ip = cptr<I>(ids, dt_of<I>(), OPB, "ids");
            // ids were validated by embedding_backward_rows, which also set mark.
            py::gil_scoped_release nogil;
            backward_kernel<T>(g, D, ip, N, mk, vals, U);
            for (i64 j = 0; j < U; ++j) mk[rw[j]] = 0;  // leave mark all zero again
          });
        });
      },
      py::arg("dout"), py::arg("ids"), py::arg("mark"), py::arg("rows"), py::arg("values"));
}

}  // namespace fastscale
