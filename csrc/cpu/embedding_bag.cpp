// embedding_bag: per bag, the sum or mean of weight rows (optionally weighted per id),
// skipping padding_idx, without materialising (B, T, D).  Bags are CSR (ids (N,) +
// offsets (B+1,)) or padded rows (ids (B, T)); both are "bag b = ids[begin(b):end(b)]".
//
// Forward: OpenMP over bags; a bag's D columns are processed in chunks of 256 bytes whose
// accumulators stay in registers while the bag's rows stream through; the row PF ids ahead
// is prefetched.  Backward: threads own disjoint blocks of 16 table rows and each adds, in
// position order, only into its own rows, so there is no race and the result is bitwise
// the same for any thread count.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "common.h"

namespace fastscale {
namespace {

constexpr int PF = 8;           // prefetch distance in ids
constexpr int PCH = 4;          // forward: neighbouring bags per scheduling chunk

template <class I, class O>
struct Bags {
  const I* ids;
  const O* offsets;  // nullptr: padded (B, Tlen)
  i64 Tlen;
  FS_INLINE i64 begin(i64 b) const { return offsets ? static_cast<i64>(offsets[b]) : b * Tlen; }
  FS_INLINE i64 end(i64 b) const { return offsets ? static_cast<i64>(offsets[b + 1]) : (b + 1) * Tlen; }
};

// Narrows [s, e) to the span between the first and last non-padding id, 64 ids per test
// (a branch-free OR over a block vectorises), so leading / trailing padding costs one
// quick pass per bag instead of a pass per column chunk.
template <class I>
FS_INLINE void trim_bag(const I* ids, i64& s, i64& e, I pad) {
  while (s + 64 <= e) {
    I any = 0;
    for (int j = 0; j < 64; ++j) any |= ids[s + j] ^ pad;
    if (any) break;
    s += 64;
  }
  while (s < e && ids[s] == pad) ++s;
  while (e - 64 >= s) {
    I any = 0;
    for (int j = 1; j <= 64; ++j) any |= ids[e - j] ^ pad;
    if (any) break;
    e -= 64;
  }
  while (e > s && ids[e - 1] == pad) --e;
}

template <class I>
FS_INLINE i64 count_bag(const I* ids, i64 s, i64 e, i64 pad) {
  // A padding_idx beyond the range of I (a table of more than 2**31 rows, int32 ids) equals
  // no id; narrowing it to I would turn it into some other, valid id.
  if (pad < 0 || pad > static_cast<i64>(std::numeric_limits<I>::max())) return e - s;
  i64 n = 0;
  const I p = static_cast<I>(pad);
  for (i64 k = s; k < e; ++k) n += (ids[k] != p);
  return n;
}

template <int N>
using IC = std::integral_constant<int, N>;

// A lambda's body is compiled for the baseline ISA, not its caller's target("avx512f,...")
// (FS_MULTIVERSION): it must be inlined into the caller to get the caller's vectors and FMA.
#define FS_LAMBDA_INLINE __attribute__((always_inline))

// The columns a row kernel has left, [d0, D), fewer than 4 vectors of 64 bytes: as calls
// chunk(IC<NV>, IC<VB>, IC<W>, d0) of NV vectors of VB bytes from column d0, W lanes of each
// read from the row (W = VB / sizeof(T) but in a table narrower than 16 bytes).  Whole
// vectors first, then one more ending at column D, in the widest vector D allows.  That last
// one overlaps columns already done and rewrites them with the same bits (each column is
// the same sum in the same order), so no width needs a scalar loop: that loop, which
// accumulated in memory, made 16- and 32-float tables several times slower than 64-float ones.
template <class T, class F>
FS_INLINE void rest_chunks(i64 D, i64 d0, F&& chunk) {
  auto in = [&](auto vb) FS_LAMBDA_INLINE {
    constexpr int VB = decltype(vb)::value, L = VB / static_cast<int>(sizeof(T));
    const i64 full = (D - d0) / L;
    if (full == 3) chunk(IC<3>{}, vb, IC<L>{}, d0);
    else if (full == 2) chunk(IC<2>{}, vb, IC<L>{}, d0);
    else if (full == 1) chunk(IC<1>{}, vb, IC<L>{}, d0);
    if (d0 + full * L < D) chunk(IC<1>{}, vb, IC<L>{}, D - L);
  };
  if (d0 == D) return;
  if (D >= 64 / static_cast<i64>(sizeof(T))) in(IC<64>{});
  else if (D >= 32 / static_cast<i64>(sizeof(T))) in(IC<32>{});
  else if (D >= 16 / static_cast<i64>(sizeof(T))) in(IC<16>{});
  else if (D == 3) chunk(IC<1>{}, IC<16>{}, IC<3>{}, i64(0));
  else if (D == 2) chunk(IC<1>{}, IC<16>{}, IC<2>{}, i64(0));
  else chunk(IC<1>{}, IC<16>{}, IC<1>{}, i64(0));
}

// x = W lanes of p, the rest zero (W < the vector's lanes only in a table narrower than it).
// An out-parameter: a vector returned by value from an untargeted function warns (-Wpsabi).
template <int W, class V, class T>
FS_INLINE void load_lanes(V& x, const T* p) {
  if (W * sizeof(T) < sizeof(V)) x = V{};
  std::memcpy(&x, p, W * sizeof(T));
}

// Sum of rows (times psw[k] when given) over one bag for columns [d0, d0 + NV * VB bytes):
// NV VB-byte vector accumulators (GCC vector extension: VB = 64 is a zmm, or 2 ymm / 4 xmm)
// stay in registers while the bag's rows stream through.  NV = 8 on AVX-512 covers a
// 128-float row in one pass over the ids, with 8 independent add chains (4 left the adds
// latency-bound).  Leading / trailing padding was trimmed per bag (trim_bag); padding inside
// the span costs one predictable branch.  Columns are summed in position order whatever NV
// and VB are: bitwise the same result on every ISA path and for every chunking.  W: lanes
// per row read (see rest_chunks).
template <int NV, int VB, int W, class T, class I, bool PSW, bool PAD>
FS_INLINE void bag_chunk(const T* FS_RESTRICT weight, i64 D, i64 d0, const I* FS_RESTRICT ids, i64 s, i64 e,
                         const T* FS_RESTRICT psw, I pad, T* FS_RESTRICT o) {
  typedef T vec __attribute__((vector_size(VB)));
  constexpr int L = VB / sizeof(T);
  vec a[NV];
#pragma GCC unroll 8
  for (int j = 0; j < NV; ++j) a[j] = vec{};
  for (i64 k = s; k < e; ++k) {
    const I id = ids[k];
    if (PAD && id == pad) continue;
    if (k + PF < e) {
      const char* nxt = reinterpret_cast<const char*>(weight + static_cast<i64>(ids[k + PF]) * D + d0);
#pragma GCC unroll 8
      for (int j = 0; j < (NV * VB + 63) / 64; ++j) __builtin_prefetch(nxt + 64 * j);
    }
    const T* r = weight + static_cast<i64>(id) * D + d0;
    const T c = PSW ? psw[k] : T(1);
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      vec x;
      load_lanes<W>(x, r + j * L);
      if (PSW) a[j] += c * x;
      else a[j] += x;
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < NV; ++j) std::memcpy(o + d0 + j * L, &a[j], W * sizeof(T));
}

template <int NV, class T, class I, bool PSW, bool PAD>
FS_INLINE void bag_row(const T* weight, i64 D, const I* ids, i64 s, i64 e, const T* psw, I pad, T* o) {
  constexpr i64 CH = NV * 64 / sizeof(T), CH4 = 256 / sizeof(T), L = 64 / sizeof(T);
  i64 d0 = 0;
  for (; d0 + CH <= D; d0 += CH) bag_chunk<NV, 64, L, T, I, PSW, PAD>(weight, D, d0, ids, s, e, psw, pad, o);
  if (NV > 4)
    for (; d0 + CH4 <= D; d0 += CH4) bag_chunk<4, 64, L, T, I, PSW, PAD>(weight, D, d0, ids, s, e, psw, pad, o);
  rest_chunks<T>(D, d0, [&](auto nv, auto vb, auto w, i64 at) FS_LAMBDA_INLINE {
    bag_chunk<decltype(nv)::value, decltype(vb)::value, decltype(w)::value, T, I, PSW, PAD>(weight, D, at, ids, s, e,
                                                                                           psw, pad, o);
  });
}

// First position in [s, e) whose id is outside [0, V), or -1: one branch-free unsigned
// compare per id (negative ids wrap to huge), then a scalar search only when one is bad.
template <class I>
FS_INLINE i64 span_first_bad(const I* ids, i64 s, i64 e, i64 V) {
  using U = std::make_unsigned_t<I>;
  const bool wide = V > static_cast<i64>(std::numeric_limits<I>::max());  // only negatives can be bad
  const U lim = static_cast<U>(wide ? std::numeric_limits<I>::max() : V);
  int bad = 0;
  if (wide) {
    for (i64 k = s; k < e; ++k) bad |= ids[k] < 0;
  } else {
    for (i64 k = s; k < e; ++k) bad |= static_cast<U>(ids[k]) >= lim;
  }
  if (!bad) return -1;
  for (i64 k = s; k < e; ++k)
    if (static_cast<i64>(ids[k]) < 0 || static_cast<i64>(ids[k]) >= V) return k;
  return -1;
}

// One bag.  The OpenMP loops live outside the multiversioned bodies: GCC outlines a
// parallel region from the function that contains it, so a region inside an always-inline
// body would be compiled once, for the baseline, whatever ISA its caller targets.
// The ids are validated here, bag by bag, on the span that is read anyway (what trimming
// drops is padding, a valid id): no separate pass over all B * T padded ids.  A bag with a
// bad id sets *bad to its position and is not computed (the caller raises; out is its own).
template <class NVC, class T, class I, class O>
FS_INLINE void forward_bag_body(const T* weight, i64 D, Bags<I, O> bags, i64 b, const T* psw, i64 pad, bool mean,
                                T* out, i64 V, i64* bad) {
  const bool has_pad = pad >= 0 && pad <= static_cast<i64>(std::numeric_limits<I>::max());  // see count_bag
  const I p = static_cast<I>(has_pad ? pad : 0);
  i64 s = bags.begin(b), e = bags.end(b);
  T* o = out + b * D;
  if (has_pad) trim_bag(bags.ids, s, e, p);
  *bad = span_first_bad(bags.ids, s, e, V);
  if (*bad >= 0) return;
  if (psw) {
    if (has_pad) bag_row<NVC::value, T, I, true, true>(weight, D, bags.ids, s, e, psw, p, o);
    else bag_row<NVC::value, T, I, true, false>(weight, D, bags.ids, s, e, psw, p, o);
  } else {
    if (has_pad) bag_row<NVC::value, T, I, false, true>(weight, D, bags.ids, s, e, psw, p, o);
    else bag_row<NVC::value, T, I, false, false>(weight, D, bags.ids, s, e, psw, p, o);
  }
  if (mean) {
    const i64 n = count_bag(bags.ids, s, e, pad);
    // An empty (or all-padding) bag is zeros, never 0/0.
    const T scale = n > 0 ? T(1) / static_cast<T>(n) : T(0);
    for (i64 j = 0; j < D; ++j) o[j] *= scale;
  }
}
FS_MULTIVERSION_REGS(forward_bag, forward_bag_body)

// Returns the first bad id's position, or -1 (an integer min: the same for any schedule).
template <class T, class I, class O>
i64 forward_kernel(const T* weight, i64 D, Bags<I, O> bags, i64 B, const T* psw, i64 pad, bool mean, T* out,
                   i64 V) {
  i64 first = std::numeric_limits<i64>::max();
  // Chunks of PCH neighbouring bags: a thread then reads one contiguous stretch of ids,
  // which the hardware prefetcher streams; with one bag per chunk the two threads' reads
  // interleave.  This matters most for padded ids, mostly padding that trim_bag must read:
  // their forward went from ~20% over the CSR form's time for the same tokens to ~5-14%,
  // and the CSR form itself from ~0.114 to ~0.101 ms (origin batch, int32, 2 threads).
  std::atomic<i64> first_bad{first};
  parallel_chunks((B + PCH - 1) / PCH, get_num_threads(), [&](i64 c) {
    for (i64 b = c * PCH; b < std::min(B, c * PCH + PCH); ++b) {
      i64 bad = -1;
      forward_bag<T>(weight, D, bags, b, psw, pad, mean, out, V, &bad);
      for (i64 cur = first_bad.load(); bad >= 0 && bad < cur && !first_bad.compare_exchange_weak(cur, bad);) {
      }
    }
  });
  first = first_bad.load();
  return first == std::numeric_limits<i64>::max() ? -1 : first;
}


// grad (V, D) = d/dweight.  Each thread zeroes and accumulates its own row blocks.
template <class T, class I, class O>
FS_INLINE void backward_dense_body(const T* dout, i64 D, Bags<I, O> bags, i64 B, const T* psw, i64 pad, bool mean,
                                   T* grad, i64 V, int t, int nt) {
  {
    for (i64 blk = t; (blk << OWN_SHIFT) < V; blk += nt) {
      const i64 r0 = blk << OWN_SHIFT, r1 = std::min(V, r0 + (i64(1) << OWN_SHIFT));
      std::memset(static_cast<void*>(grad + r0 * D), 0, static_cast<size_t>((r1 - r0) * D) * sizeof(T));
    }
    for (i64 b = 0; b < B; ++b) {
      i64 s = bags.begin(b), e = bags.end(b);
      if (pad >= 0) trim_bag(bags.ids, s, e, static_cast<I>(pad));  // padding adds nothing
      T scale = T(1);
      if (mean) {
        const i64 n = count_bag(bags.ids, s, e, pad);
        if (n == 0) continue;
        scale = T(1) / static_cast<T>(n);
      }
      const T* FS_RESTRICT g = dout + b * D;
      for (i64 k = s; k < e; ++k) {
        const i64 id = bags.ids[k];
        if (id == pad || !owns(id, t, nt)) continue;
        const T c = psw ? psw[k] : scale;
        T* FS_RESTRICT r = grad + id * D;
        for (i64 j = 0; j < D; ++j) r[j] += c * g[j];
      }
    }
  }
}
FS_MULTIVERSION(backward_dense_thread, backward_dense_body)

template <class T, class I, class O>
void backward_dense_kernel(const T* dout, i64 D, Bags<I, O> bags, i64 B, const T* psw, i64 pad, bool mean, T* grad,
                           i64 V) {
  // nt owners (common.h: owns), each run as one pool chunk: a late worker means the caller
  // runs both owners' parts, instead of waiting for it at a barrier.
  const int nt = get_num_threads();
  parallel_chunks(nt, nt, [&](i64 t) {
    backward_dense_thread<T>(dout, D, bags, B, psw, pad, mean, grad, V, static_cast<int>(t), nt);
  });
}

// Sparse backward, as a sorted segment reduction (PyTorch's CUDA EmbeddingBag backward does
// the same): a serial plan groups the positions of each unique row in position order, then
// each row's gradient is summed once, in registers' reach, and written once.  No (U, D)
// clearing pass, no read-modify-write of scattered rows, and every row is owned by exactly
// one thread: bitwise the same for any thread count.
//
// plan: rows[0:U] = unique sorted non-padding ids; row u's entries are
// [starts[u], starts[u + 1]) of (ent_bag, ent_c) = (bag, coefficient: psw[k] or 1 / count),
// in position order.  Two passes over the bags' non-padding spans; the first also checks
// the ids (positions outside the spans are padding, valid), so the ids are read twice, not
// three times.  Returns the status (common.h) and U in *U_out.  mark must be all zero on
// entry and is all zero again on return, also on error.
template <class T, class I, class O>
i64 sparse_plan(Bags<I, O> bags, i64 B, const T* psw, i64 pad, bool mean, std::int32_t* mark, i64 V,
                std::int64_t* rows, std::int64_t* starts, std::int64_t* ent_bag, T* ent_c, i64* U_out) {
  const bool has_pad = pad >= 0 && pad <= static_cast<i64>(std::numeric_limits<I>::max());  // see count_bag
  const I p = static_cast<I>(has_pad ? pad : 0);
  std::vector<i64> span(static_cast<size_t>(2 * B));
  std::vector<T> scale(static_cast<size_t>(B));
  i64 U = 0, bad = -1;
  // Pass 1: validate, count each row's entries in mark (int32: a row's count is at most the
  // entries of one call, checked by the binding to fit), list the rows met.
  for (i64 b = 0; b < B && bad < 0; ++b) {
    i64 s = bags.begin(b), e = bags.end(b);
    if (has_pad) trim_bag(bags.ids, s, e, p);
    span[2 * b] = s;
    span[2 * b + 1] = e;
    i64 n = 0;
    for (i64 k = s; k < e; ++k) {
      const I id = bags.ids[k];
      if (has_pad && id == p) continue;
      if (static_cast<i64>(id) < 0 || static_cast<i64>(id) >= V) { bad = k; break; }
      ++n;
      const std::int32_t seen = mark[id]++;
      rows[U] = id;  // branch-free: whether a row is new is a coin flip the predictor loses
      U += seen == 0;
    }
    scale[b] = (mean && n > 0) ? T(1) / static_cast<T>(n) : T(1);
  }
  if (bad >= 0) {
    for (i64 u = 0; u < U; ++u) mark[rows[u]] = 0;
    return status_bad_id(bad);
  }
  // Rows sorted: a scan of mark for small tables, a sort of the few rows for large ones.
  if (V <= 32 * U) {
    i64 j = 0;
    for (i64 v = 0; v < V; ++v) {
      rows[j] = v;
      j += mark[v] != 0;
    }
  } else {
    std::sort(rows, rows + U);
  }
  i64 at = 0;
  for (i64 u = 0; u < U; ++u) {  // row u's entries start at starts[u]; mark becomes 1 + slot
    starts[u] = at;
    at += mark[rows[u]];
    mark[rows[u]] = static_cast<std::int32_t>(u + 1);
  }
  starts[U] = at;
  // Pass 2: fill in position order; starts[u] advances to the end of row u, then is restored.
  for (i64 b = 0; b < B; ++b) {
    const T c = scale[b];
    const i64 s = span[2 * b], e = span[2 * b + 1];
    for (i64 k = s; k < e; ++k) {
      const I id = bags.ids[k];
      if (has_pad && id == p) continue;
      const i64 q = starts[mark[id] - 1]++;
      ent_bag[q] = b;
      ent_c[q] = psw ? psw[k] : c;
    }
  }
  for (i64 u = U; u > 0; --u) starts[u] = starts[u - 1];
  starts[0] = 0;
  for (i64 u = 0; u < U; ++u) mark[rows[u]] = 0;
  *U_out = U;
  return 0;
}

// One row's columns [d0, d0 + NV * VB bytes): NV VB-byte accumulators in registers over the
// row's entries (0 + c * g + ..., in entry order, as the dense backward adds them; NV, VB
// and W as in bag_chunk).
template <int NV, int VB, int W, class T>
FS_INLINE void segment_chunk(const T* FS_RESTRICT dout, i64 D, i64 d0, const std::int64_t* FS_RESTRICT ent_bag,
                             const T* FS_RESTRICT ent_c, i64 e0, i64 e1, T* FS_RESTRICT r) {
  typedef T vec __attribute__((vector_size(VB)));
  constexpr int L = VB / sizeof(T);
  vec a[NV];
#pragma GCC unroll 8
  for (int j = 0; j < NV; ++j) a[j] = vec{};
  for (i64 e = e0; e < e1; ++e) {
    const T* g = dout + ent_bag[e] * D + d0;
    const T c = ent_c[e];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      vec x;
      load_lanes<W>(x, g + j * L);
      a[j] += c * x;
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < NV; ++j) std::memcpy(r + d0 + j * L, &a[j], W * sizeof(T));
}

template <class NVC, class T>
FS_INLINE void segment_rows_body(const T* FS_RESTRICT dout, i64 D, const std::int64_t* FS_RESTRICT starts,
                                 const std::int64_t* FS_RESTRICT ent_bag, const T* FS_RESTRICT ent_c,
                                 T* FS_RESTRICT values, i64 u0, i64 u1) {
  constexpr int NV = NVC::value;
  constexpr i64 CH = NV * 64 / sizeof(T), CH4 = 256 / sizeof(T), L = 64 / sizeof(T);
  for (i64 u = u0; u < u1; ++u) {
    T* FS_RESTRICT r = values + u * D;
    const i64 e0 = starts[u], e1 = starts[u + 1];
    i64 d0 = 0;
    for (; d0 + CH <= D; d0 += CH) segment_chunk<NV, 64, L, T>(dout, D, d0, ent_bag, ent_c, e0, e1, r);
    if (NV > 4)
      for (; d0 + CH4 <= D; d0 += CH4) segment_chunk<4, 64, L, T>(dout, D, d0, ent_bag, ent_c, e0, e1, r);
    rest_chunks<T>(D, d0, [&](auto nv, auto vb, auto w, i64 at) FS_LAMBDA_INLINE {
      segment_chunk<decltype(nv)::value, decltype(vb)::value, decltype(w)::value, T>(dout, D, at, ent_bag, ent_c, e0,
                                                                                      e1, r);
    });
  }
}
FS_MULTIVERSION_REGS(segment_rows, segment_rows_body)

template <class T>
void segment_kernel(const T* dout, i64 D, const std::int64_t* starts, const std::int64_t* ent_bag, const T* ent_c,
                    T* values, i64 U) {
  // Chunks of rows taken dynamically (a worker that wakes late -- the runtime waits
  // passively -- or a chunk holding a frequent row such as "the" does not hold the other
  // thread back).  A row's sum never depends on the thread that computes it.
  const i64 E = starts[U];
  const int nt = E * D >= (1 << 14) ? get_num_threads() : 1;
  constexpr i64 CR = 64;  // rows per chunk
  const i64 nchunks = (U + CR - 1) / CR;
  parallel_chunks(nchunks, nt, [&](i64 c) {
    segment_rows<T>(dout, D, starts, ent_bag, ent_c, values, c * CR, std::min(U, c * CR + CR));
  });
}

// ------------------------------------------------------------------ bindings
const char* const OP = "embedding_bag";
const char* const OPB = "embedding_bag_backward";

// Validates offsets and ids (status per common.h) and calls f(Bags<I, O>).
template <class I, class O, class F>
i64 with_bags(const py::array& ids, const py::object& offsets, i64 V, const char* op, F&& f, i64* B_out,
              bool check_ids = true) {
  const I* ip = cptr<I>(ids, dt_of<I>(), op, "ids");
  Bags<I, O> bags{ip, nullptr, 0};
  i64 N = 0;
  if (offsets.is_none()) {
    if (ids.ndim() != 2) shape_error(op, "padded ids must be 2-D");
    *B_out = dim(ids, 0);
    bags.Tlen = dim(ids, 1);
    N = *B_out * bags.Tlen;
  } else {
    py::array off = offsets.cast<py::array>();
    if (ids.ndim() != 1 || off.ndim() != 1) shape_error(op, "CSR ids and offsets must be 1-D");
    N = dim(ids, 0);
    const O* op_ = cptr<O>(off, dt_of<O>(), op, "offsets");
    *B_out = dim(off, 0) - 1;
    i64 bad;
    {
      py::gil_scoped_release nogil;
      bad = first_bad_offset(op_, dim(off, 0), N);
    }
    if (bad >= 0) return status_bad_offset(bad);
    bags.offsets = op_;
  }
  if (check_ids) {
    i64 bad;
    {
      py::gil_scoped_release nogil;
      bad = first_bad_id(ip, N, V);
    }
    if (bad >= 0) return status_bad_id(bad);
  }
  return f(bags);
}

// check_ids = false: f validates the ids itself (fused into its first pass).
template <class F>
i64 dispatch_ids(const py::array& ids, const py::object& offsets, i64 V, const char* op, F&& f, i64* B,
                 bool check_ids = true) {
  return with_index(ids, op, "ids", [&](auto i) -> i64 {
    using I = decltype(i);
    if (offsets.is_none()) return with_bags<I, I>(ids, offsets, V, op, f, B, check_ids);
    return with_index(offsets.cast<py::array>(), op, "offsets", [&](auto o) -> i64 {
      using O = decltype(o);
      return with_bags<I, O>(ids, offsets, V, op, f, B, check_ids);
    });
  });
}

template <class T>
const T* opt_ptr(const py::object& a, const char* op, const char* name, i64 n) {
  if (a.is_none()) return nullptr;
  py::array arr = a.cast<py::array>();
  if (static_cast<i64>(arr.size()) != n) shape_error(op, std::string("argument '") + name + "' must have one entry per id");
  return cptr<T>(arr, dt_of<T>(), op, name);
}

}  // namespace

void bind_embedding_bag(py::module_& m) {
  m.def(
      "embedding_bag_forward",
      [](py::array weight, py::array ids, py::object offsets, py::object psw, i64 pad, bool mean, py::array out) -> i64 {
        if (weight.ndim() != 2 || out.ndim() != 2) shape_error(OP, "weight and out must be 2-D");
        const i64 V = dim(weight, 0), D = dim(weight, 1);
        return with_float(weight, OP, "weight", [&](auto tt) -> i64 {
          using T = decltype(tt);
          const T* w = cptr<T>(weight, dt_of<T>(), OP, "weight");
          T* o = mptr<T>(out, dt_of<T>(), OP, "out");
          i64 B = 0;
          return dispatch_ids(ids, offsets, V, OP, [&](auto bags) -> i64 {
            if (dim(out, 0) != B || dim(out, 1) != D) shape_error(OP, "out must be (B, D)");
            const T* p = opt_ptr<T>(psw, OP, "per_sample_weights", static_cast<i64>(ids.size()));
            py::gil_scoped_release nogil;
            const i64 bad = forward_kernel<T>(w, D, bags, B, p, pad, mean, o, V);
            return bad >= 0 ? status_bad_id(bad) : 0;
          }, &B, /*check_ids=*/false);
        });
      },
      py::arg("weight"), py::arg("ids"), py::arg("offsets"), py::arg("per_sample_weights"), py::arg("padding_idx"),
      py::arg("mean"), py::arg("out"),
      "out (B, D) = sum or mean of weight rows per bag; returns a status (0 ok, >0 bad id, <0 bad offset)");

  m.def(
      "embedding_bag_backward_dense",
      [](py::array dout, py::array ids, py::object offsets, py::object psw, i64 pad, bool mean, py::array grad) -> i64 {
        if (dout.ndim() != 2 || grad.ndim() != 2) shape_error(OPB, "dout and grad must be 2-D");
        const i64 V = dim(grad, 0), D = dim(grad, 1);
        if (dim(dout, 1) != D) shape_error(OPB, "dout and grad must have the same D");
        return with_float(dout, OPB, "dout", [&](auto tt) -> i64 {
          using T = decltype(tt);
          const T* g = cptr<T>(dout, dt_of<T>(), OPB, "dout");
          T* gr = mptr<T>(grad, dt_of<T>(), OPB, "out");
          i64 B = 0;
          return dispatch_ids(ids, offsets, V, OPB, [&](auto bags) -> i64 {
            if (dim(dout, 0) != B) shape_error(OPB, "dout must be (B, D)");
            const T* p = opt_ptr<T>(psw, OPB, "per_sample_weights", static_cast<i64>(ids.size()));
            if (D == 0) return 0;  // nothing to write; V may be huge (the row loop would spin)
            py::gil_scoped_release nogil;
            backward_dense_kernel<T>(g, D, bags, B, p, pad, mean, gr, V);
            return 0;
          }, &B);
        });
      },
      py::arg("dout"), py::arg("ids"), py::arg("offsets"), py::arg("per_sample_weights"), py::arg("padding_idx"),
      py::arg("mean"), py::arg("grad"));

  m.def(
      "embedding_bag_backward_rows",
      [](py::array ids, py::object offsets, py::object psw, i64 pad, bool mean, py::array mark, py::array rows,
         py::array starts, py::array ent_bag, py::array ent_c) -> std::pair<i64, i64> {
        const i64 V = dim(mark, 0);
        const i64 N = static_cast<i64>(ids.size());
        std::int32_t* mk = mptr<std::int32_t>(mark, Dt::i32, OPB, "mark");
        std::int64_t* rw = mptr<std::int64_t>(rows, Dt::i64, OPB, "rows");
        std::int64_t* st_ = mptr<std::int64_t>(starts, Dt::i64, OPB, "starts");
        std::int64_t* eb = mptr<std::int64_t>(ent_bag, Dt::i64, OPB, "ent_bag");
        if (static_cast<i64>(rows.size()) < N + 1 || static_cast<i64>(starts.size()) < N + 1 ||
            static_cast<i64>(ent_bag.size()) < N || static_cast<i64>(ent_c.size()) < N)
          shape_error(OPB, "ent_bag, ent_c must hold len(ids) entries, rows and starts len(ids) + 1");
        if (N > static_cast<i64>(std::numeric_limits<std::int32_t>::max()))
          shape_error(OPB, "sparse=True takes at most 2**31 - 1 ids per call (the row counts are int32)");
        return with_float(ent_c, OPB, "ent_c", [&](auto tt) -> std::pair<i64, i64> {
          using T = decltype(tt);
          T* ec = mptr<T>(ent_c, dt_of<T>(), OPB, "ent_c");
          const T* p = opt_ptr<T>(psw, OPB, "per_sample_weights", N);
          i64 B = 0, U = 0;
          const i64 st = dispatch_ids(ids, offsets, V, OPB, [&](auto bags) -> i64 {
            py::gil_scoped_release nogil;
            return sparse_plan<T>(bags, B, p, pad, mean, mk, V, rw, st_, eb, ec, &U);
          }, &B, /*check_ids=*/false);
          return {st, U};
        });
      },
      py::arg("ids"), py::arg("offsets"), py::arg("per_sample_weights"), py::arg("padding_idx"), py::arg("mean"),
      py::arg("mark"), py::arg("rows"), py::arg("starts"), py::arg("ent_bag"), py::arg("ent_c"),
      "(status, U): validates ids / offsets; rows[0:U] unique sorted rows, their entries grouped by starts");

  m.def(
      "embedding_bag_backward_values",
      [](py::array dout, py::array starts, py::array ent_bag, py::array ent_c, py::array values) {
        if (dout.ndim() != 2 || values.ndim() != 2) shape_error(OPB, "dout and values must be 2-D");
        const i64 D = dim(dout, 1), U = dim(values, 0), B = dim(dout, 0);
        if (dim(values, 1) != D || static_cast<i64>(starts.size()) < U + 1) shape_error(OPB, "values must be (U, D)");
        const std::int64_t* st_ = cptr<std::int64_t>(starts, Dt::i64, OPB, "starts");
        const std::int64_t* eb = cptr<std::int64_t>(ent_bag, Dt::i64, OPB, "ent_bag");
        if (st_[0] != 0 || st_[U] > static_cast<i64>(ent_bag.size())) shape_error(OPB, "starts do not fit ent_bag");
        with_float(dout, OPB, "dout", [&](auto tt) {
          using T = decltype(tt);
          const T* g = cptr<T>(dout, dt_of<T>(), OPB, "dout");
          const T* ec = cptr<T>(ent_c, dt_of<T>(), OPB, "ent_c");
          T* vals = mptr<T>(values, dt_of<T>(), OPB, "values");
          if (static_cast<i64>(ent_c.size()) < st_[U]) shape_error(OPB, "starts do not fit ent_c");
          (void)B;  // ent_bag < B by construction (embedding_bag_backward_rows)
          py::gil_scoped_release nogil;
          segment_kernel<T>(g, D, st_, eb, ec, vals, U);
        });
      },
      py::arg("dout"), py::arg("starts"), py::arg("ent_bag"), py::arg("ent_c"), py::arg("values"),
      "values[u] = sum over row u's entries of ent_c * dout[ent_bag] (as planned by embedding_bag_backward_rows)");
}

}  // namespace fastscale
