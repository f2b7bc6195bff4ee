// tokenizer: fastscale.text.Tokenizer's word-level rules (Keras' rules plus strip_html and
// hashed n-grams) on Python str objects, without the GIL, on all threads.
//
// Texts are read in place from CPython's own storage (1, 2 or 4 bytes per code point), so
// nothing is encoded up front.  Per text, exactly as text.py: (1) every "<br>", "<br/>",
// "<br />" ("<" [bB] [rR] " "* "/"? ">") becomes " "; (2) str.lower(): ASCII by table, other
// code points by tables generated from Python's own str.lower (tokenizer_unicode.h,
// including U+03A3's final-sigma rule), or, when the interpreter's Unicode version differs
// from the tables', by calling str.lower() on the non-ASCII texts before the GIL is
// released; (3) every filter character and the (single-character) split character end a
// token; empty tokens are dropped.  Tokens are kept as UTF-8 bytes with their 32-bit
// FNV-1a hash, computed while the bytes are appended; that hash is also the n-gram hash.
//
// fit: threads own contiguous ranges of texts, each with its own word table (words in
// first-seen order, counts, documents); the tables are merged in range order, so the merged
// first-seen order is Keras' (texts in order, words within a text in order) for any thread
// count.  The per-token provisional ids are kept so that encoding the fitted texts again
// needs no second pass over the text.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "common.h"
#include "tokenizer_unicode.h"

namespace fastscale {
namespace {

using u32 = std::uint32_t;
using u64 = std::uint64_t;
using i32 = std::int32_t;

constexpr u32 FNV_OFFSET = 2166136261u;
constexpr u32 FNV_PRIME = 16777619u;
constexpr u64 NGRAM_MULT = 116049371ull;  // fastText's n-gram combining multiplier

// ---------------------------------------------------------------- Unicode lower case
namespace tu = tokenizer_unicode;
constexpr u32 SMALL = 0x800;  // direct table below this code point (Latin, Greek, Cyrillic, ...)
constexpr u32 MULTI = 0xFFFFFFFFu;

struct LowerTable {
  u32 small[SMALL];  // cp -> its one-code-point lower case, or MULTI (look up kLower)
  LowerTable() {
    for (u32 c = 0; c < SMALL; ++c) small[c] = c;
    for (int k = 0; k < tu::kLowerCount; ++k)
      if (tu::kLower[k].cp < SMALL) small[tu::kLower[k].cp] = tu::kLower[k].n == 1 ? tu::kLower[k].to[0] : MULTI;
  }
};
const LowerTable& lower_table() {
  static const LowerTable t;  // built on the first fit, before any parallel region
  return t;
}

// Lower case of one code point (not U+03A3, which needs its context) into out; returns the count.
FS_INLINE int lower_cp(const LowerTable& T, u32 c, u32* out) {
  if (c < SMALL && T.small[c] != MULTI) {
    out[0] = T.small[c];
    return 1;
  }
  const tu::Lower* e = std::lower_bound(tu::kLower, tu::kLower + tu::kLowerCount, c,
                                        [](const tu::Lower& a, u32 v) { return a.cp < v; });
  if (e == tu::kLower + tu::kLowerCount || e->cp != c) {
    out[0] = c;
    return 1;
  }
  for (int j = 0; j < e->n; ++j) out[j] = e->to[j];
  return e->n;
}

bool in_ranges(const u32 (*r)[2], int n, u32 c) {
  // The last range whose start is <= c.
  int lo = 0, hi = n;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (r[mid][0] <= c) lo = mid + 1;
    else hi = mid;
  }
  return lo > 0 && c <= r[lo - 1][1];
}
bool cased(u32 c) { return in_ranges(tu::kCased, tu::kCasedCount, c); }
bool case_ignorable(u32 c) { return in_ranges(tu::kCaseIgnorable, tu::kCaseIgnorableCount, c); }

// CPython's handle_capital_sigma: U+03A3 lower-cases to final sigma when preceded by a cased
// letter and not followed by one (case-ignorable characters skipped on both sides).  The
// context is read from the raw text: a stripped "<br ...>" starts with "<" and ends with
// ">", which stop both scans exactly as the " " replacing it does.
template <class C>
u32 sigma_lower(const C* s, i64 i, i64 n) {
  i64 j = i - 1;
  while (j >= 0 && case_ignorable(s[j])) --j;
  bool fin = j >= 0 && cased(s[j]);
  if (fin) {
    j = i + 1;
    while (j < n && case_ignorable(s[j])) ++j;
    fin = j == n || !cased(s[j]);
  }
  return fin ? 0x3C2 : 0x3C3;
}

// ---------------------------------------------------------------- rules
struct Rules {
  short amap[128];        // ASCII: the (lower-cased) character, or -1 when it ends a token
  std::vector<u32> wide;  // sorted non-ASCII characters that end a token (filters, split)
  bool strip_html = true;
  bool lower_unicode = false;  // lower-case non-ASCII code points here (else: already done)
};

struct Text {
  const void* data;
  i64 len;
  int kind;  // 1, 2 or 4 bytes per code point
};

// Length of the "<br ...>" line break starting at s[i] (s[i] == '<'), or 0.
template <class C>
FS_INLINE i64 br_len(const C* s, i64 i, i64 n) {
  if (i + 3 >= n || (s[i + 1] | 0x20) != 'b' || (s[i + 2] | 0x20) != 'r') return 0;
  i64 j = i + 3;
  while (j < n && s[j] == ' ') ++j;
  if (j < n && s[j] == '/') ++j;
  return (j < n && s[j] == '>') ? j + 1 - i : 0;
}

// The current token: UTF-8 bytes and their running FNV-1a hash.
struct TokenBuf {
  std::string b;
  u32 h = FNV_OFFSET;
  bool surrogate = false;  // a lone surrogate was encoded (Python's str.encode would raise)
  FS_INLINE void byte(unsigned char c) {
    b.push_back(static_cast<char>(c));
    h = (h ^ c) * FNV_PRIME;
  }
  FS_INLINE void cp(u32 c) {  // c >= 0x80
    if (c < 0x800) {
      byte(0xC0 | (c >> 6));
    } else {
      if (c < 0x10000) {
        surrogate |= (c >= 0xD800 && c < 0xE000);
        byte(0xE0 | (c >> 12));
      } else {
        byte(0xF0 | (c >> 18));
        byte(0x80 | ((c >> 12) & 0x3F));
      }
      byte(0x80 | ((c >> 6) & 0x3F));
    }
    byte(0x80 | (c & 0x3F));
  }
};

// Calls emit(bytes, len, hash) for each token of s[0:n] in order.
template <class C, class Emit>
void scan_text(const C* s, i64 n, const Rules& R, const LowerTable& L, TokenBuf& tb, Emit&& emit) {
  tb.b.clear();
  tb.h = FNV_OFFSET;
  auto flush = [&]() {
    if (!tb.b.empty()) {
      emit(tb.b.data(), static_cast<u32>(tb.b.size()), tb.h);
      tb.b.clear();
      tb.h = FNV_OFFSET;
    }
  };
  // One (already lower-cased) code point: part of the token or a separator.
  auto feed = [&](u32 c) {
    if (c < 128) {
      const short v = R.amap[c];
      if (v < 0) flush();
      else tb.byte(static_cast<unsigned char>(v));
    } else if (!R.wide.empty() && std::binary_search(R.wide.begin(), R.wide.end(), c)) {
      flush();
    } else {
      tb.cp(c);
    }
  };
  for (i64 i = 0; i < n; ++i) {
    const u32 c = s[i];
    if (c < 128) {
      if (c == '<' && R.strip_html) {
        const i64 m = br_len(s, i, n);
        if (m) {
          feed(' ');
          i += m - 1;
          continue;
        }
      }
      const short v = R.amap[c];  // ASCII lower-casing is in the table
      if (v < 0) flush();
      else tb.byte(static_cast<unsigned char>(v));
    } else if (!R.lower_unicode) {
      feed(c);
    } else if (c == 0x3A3) {
      feed(sigma_lower(s, i, n));
    } else {
      u32 out[3];
      const int k = lower_cp(L, c, out);
      for (int j = 0; j < k; ++j) feed(out[j]);
    }
  }
  flush();
}

template <class Emit>
FS_INLINE void scan(const Text& t, const Rules& R, const LowerTable& L, TokenBuf& tb, Emit&& emit) {
  switch (t.kind) {
    case 1: scan_text(static_cast<const std::uint8_t*>(t.data), t.len, R, L, tb, emit); break;
    case 2: scan_text(static_cast<const std::uint16_t*>(t.data), t.len, R, L, tb, emit); break;
    default: scan_text(static_cast<const std::uint32_t*>(t.data), t.len, R, L, tb, emit); break;
  }
}

// ---------------------------------------------------------------- word table
// UTF-8 bytes -> dense id in first-insert order; open addressing, linear probing, <= 1/2 full.
struct WordTable {
  struct Slot {
    u32 hash, id1;  // id1 = id + 1; 0 = empty
  };
  std::vector<Slot> slots;
  int shift = 0;
  std::vector<u64> start;
  std::vector<u32> len, hash;
  std::string bytes;

  WordTable() { rehash(1 << 12); }
  u32 size() const { return static_cast<u32>(len.size()); }
  FS_INLINE u32 slot_of(u32 h) const { return (h * 0x9E3779B1u) >> shift; }
  void rehash(std::size_t cap) {
    slots.assign(cap, Slot{0, 0});
    shift = 32 - __builtin_ctzll(cap);
    const std::size_t mask = cap - 1;
    for (u32 id = 0; id < size(); ++id) {
      std::size_t k = slot_of(hash[id]);
      while (slots[k].id1) k = (k + 1) & mask;
      slots[k] = Slot{hash[id], id + 1};
    }
  }
  // The id of the word p[0:n] (hash h), inserting it if new (*added says so).
  FS_INLINE u32 get_or_add(const char* p, u32 n, u32 h, bool* added) {
    const std::size_t mask = slots.size() - 1;
    std::size_t k = slot_of(h);
    for (;;) {
      const Slot s = slots[k];
      if (!s.id1) break;
      if (s.hash == h) {
        const u32 id = s.id1 - 1;
        if (len[id] == n && std::memcmp(bytes.data() + start[id], p, n) == 0) {
          *added = false;
          return id;
        }
      }
      k = (k + 1) & mask;
    }
    const u32 id = size();
    slots[k] = Slot{h, id + 1};
    start.push_back(bytes.size());
    len.push_back(n);
    hash.push_back(h);
    bytes.append(p, n);
    *added = true;
    if (2 * (static_cast<std::size_t>(id) + 1) > slots.size()) rehash(slots.size() * 2);
    return id;
  }
};

// One thread's share of a fit: a contiguous range of texts.
struct Part {
  WordTable words;
  std::vector<i64> count, docs, last_doc;
  std::vector<i32> ids;  // per token, the id in `words` (kept only when asked for)
  i64 ntok = 0;
  bool surrogate = false;
};

void fit_part(const Text* texts, i64 b0, i64 b1, const Rules& R, const LowerTable& L, bool keep_ids, i64* lens,
              Part& P) {
  TokenBuf tb;
  for (i64 b = b0; b < b1; ++b) {
    i64 n = 0;
    scan(texts[b], R, L, tb, [&](const char* p, u32 len, u32 h) {
      bool added;
      const u32 id = P.words.get_or_add(p, len, h, &added);
      if (added) {
        P.count.push_back(0);
        P.docs.push_back(0);
        P.last_doc.push_back(-1);
      }
      ++P.count[id];
      if (P.last_doc[id] != b) {  // each text counts once per word
        P.last_doc[id] = b;
        ++P.docs[id];
      }
      if (keep_ids) P.ids.push_back(static_cast<i32>(id));
      ++n;
    });
    lens[b] = n;
    P.ntok += n;
  }
  P.surrogate = tb.surrogate;
}

template <class T>
py::array_t<T> to_numpy(std::vector<T>&& v) {
  auto* p = new std::vector<T>(std::move(v));
  py::capsule owner(p, [](void* q) { delete static_cast<std::vector<T>*>(q); });
  return py::array_t<T>({static_cast<py::ssize_t>(p->size())}, {static_cast<py::ssize_t>(sizeof(T))}, p->data(), owner);
}

// Contiguous ranges of texts with about equal numbers of code points, one per thread.
std::vector<i64> split_ranges(const std::vector<Text>& texts, int parts) {
  i64 total = 0;
  for (const Text& t : texts) total += t.len + 1;
  std::vector<i64> bounds{0};
  i64 acc = 0, b = 0;
  const i64 B = static_cast<i64>(texts.size());
  for (int p = 1; p < parts; ++p) {
    const i64 goal = total * p / parts;
    while (b < B && acc < goal) acc += texts[b++].len + 1;
    bounds.push_back(b);
  }
  bounds.push_back(B);
  return bounds;
}

Rules make_rules(bool lower, bool strip_html, const std::u32string& split_filters, bool lower_unicode) {
  Rules R;
  R.strip_html = strip_html;
  R.lower_unicode = lower && lower_unicode;
  for (int c = 0; c < 128; ++c) {
    const int l = (lower && c >= 'A' && c <= 'Z') ? c + 32 : c;
    const bool sep = split_filters.find(static_cast<char32_t>(l)) != std::u32string::npos;
    R.amap[c] = static_cast<short>(sep ? -1 : l);
  }
  for (char32_t c : split_filters)
    if (c >= 128) R.wide.push_back(static_cast<u32>(c));
  std::sort(R.wide.begin(), R.wide.end());
  R.wide.erase(std::unique(R.wide.begin(), R.wide.end()), R.wide.end());
  return R;
}

std::u32string code_points(const py::str& s) {
  PyObject* o = s.ptr();
  const Py_ssize_t n = PyUnicode_GET_LENGTH(o);
  const int kind = PyUnicode_KIND(o);
  const void* d = PyUnicode_DATA(o);
  std::u32string out;
  for (Py_ssize_t i = 0; i < n; ++i) out.push_back(static_cast<char32_t>(PyUnicode_READ(kind, d, i)));
  return out;
}

// Multithreaded region bodies must not throw: a failed allocation is recorded and rethrown.
struct Failure {
  std::atomic<bool> bad{false};
  template <class F>
  void run(F&& f) {
    try {
      f();
    } catch (...) {
      bad.store(true);
    }
  }
  void check() {
    if (bad.load()) throw std::bad_alloc();
  }
};

py::object tokenizer_fit(py::object texts_obj, bool lower, bool strip_html, py::str split, py::str filters,
                         bool lower_unicode, bool keep_ids) {
  // A tuple holds a reference to every text while the GIL is released.
  py::tuple texts = py::reinterpret_steal<py::tuple>(PySequence_Tuple(texts_obj.ptr()));
  if (!texts) throw py::error_already_set();
  const i64 B = static_cast<i64>(texts.size());
  std::vector<py::object> lowered;  // str.lower() of non-ASCII texts when the tables do not apply
  std::vector<Text> refs(B);
  for (i64 b = 0; b < B; ++b) {
    PyObject* t = PyTuple_GET_ITEM(texts.ptr(), b);
    if (!PyUnicode_CheckExact(t)) return py::none();  // token lists, str subclasses: text.py's code
    if (PyUnicode_READY(t) < 0) throw py::error_already_set();
    if (lower && !lower_unicode && !PyUnicode_IS_ASCII(t)) {
      lowered.push_back(py::reinterpret_steal<py::object>(PyObject_CallMethod(t, "lower", nullptr)));
      if (!lowered.back()) throw py::error_already_set();
      t = lowered.back().ptr();
    }
    refs[b] = Text{PyUnicode_DATA(t), static_cast<i64>(PyUnicode_GET_LENGTH(t)), static_cast<int>(PyUnicode_KIND(t))};
  }
  const Rules R = make_rules(lower, strip_html, code_points(split) + code_points(filters), lower_unicode);
  const LowerTable& L = lower_table();

  std::vector<i64> offsets(B + 1, 0);
  std::vector<i32> prov;
  std::vector<i64> counts, docs;
  std::vector<std::unique_ptr<Part>> parts;
  bool surrogate = false;
  {
    py::gil_scoped_release nogil;
    i64 chars = 0;
    for (const Text& t : refs) chars += t.len;
    const int nparts = chars < (1 << 16) ? 1 : std::max(1, get_num_threads());
    const std::vector<i64> bounds = split_ranges(refs, nparts);
    for (int p = 0; p < nparts; ++p) parts.emplace_back(new Part());
    Failure fail;
    i64* lens = offsets.data() + 1;
#pragma omp parallel for schedule(static, 1) num_threads(nparts) if (nparts > 1)
    for (int p = 0; p < nparts; ++p)
      fail.run([&] { fit_part(refs.data(), bounds[p], bounds[p + 1], R, L, keep_ids, lens, *parts[p]); });
    fail.check();

    // Merge in range order: part 0's table is the start, later parts append their new words
    // in their own first-seen order.
    std::vector<std::vector<i32>> remap(nparts);
    WordTable& G = parts[0]->words;
    counts = std::move(parts[0]->count);
    docs = std::move(parts[0]->docs);
    for (int p = 1; p < nparts; ++p) {
      Part& P = *parts[p];
      remap[p].resize(P.words.size());
      for (u32 l = 0; l < P.words.size(); ++l) {
        bool added;
        const u32 g = G.get_or_add(P.words.bytes.data() + P.words.start[l], P.words.len[l], P.words.hash[l], &added);
        if (added) {
          counts.push_back(0);
          docs.push_back(0);
        }
        counts[g] += P.count[l];
        docs[g] += P.docs[l];
        remap[p][l] = static_cast<i32>(g);
      }
    }
    if (G.size() > static_cast<u32>(INT32_MAX)) throw std::length_error("tokenizer_fit: more than 2**31 distinct words");
    std::vector<i64> tok0(nparts + 1, 0);
    for (int p = 0; p < nparts; ++p) {
      tok0[p + 1] = tok0[p] + parts[p]->ntok;
      surrogate |= parts[p]->surrogate;
    }
    for (i64 b = 0; b < B; ++b) offsets[b + 1] += offsets[b];
    if (keep_ids) {
      prov.resize(tok0[nparts]);
#pragma omp parallel for schedule(static, 1) num_threads(nparts) if (nparts > 1)
      for (int p = 0; p < nparts; ++p) {
        const std::vector<i32>& ids = parts[p]->ids;
        i32* out = prov.data() + tok0[p];
        if (p == 0) std::copy(ids.begin(), ids.end(), out);
        else
          for (std::size_t k = 0; k < ids.size(); ++k) out[k] = remap[p][ids[k]];
      }
    }
  }
  WordTable& G = parts[0]->words;
  const u32 V = G.size();
  py::list words(V);
  std::vector<u64> whash(V);
  for (u32 g = 0; g < V; ++g) {
    // surrogatepass: a lone surrogate in a text comes back as itself, as Python's split keeps it.
    PyObject* w = PyUnicode_DecodeUTF8(G.bytes.data() + G.start[g], G.len[g], "surrogatepass");
    if (!w) throw py::error_already_set();
    PyList_SET_ITEM(words.ptr(), g, w);
    whash[g] = G.hash[g];
  }
  parts.clear();
  py::object prov_out = keep_ids ? py::object(to_numpy(std::move(prov))) : py::object(py::none());
  return py::make_tuple(words, to_numpy(std::move(counts)), to_numpy(std::move(docs)), to_numpy(std::move(whash)),
                        prov_out, to_numpy(std::move(offsets)), surrogate);
}

// ---------------------------------------------------------------- encoding
// Per text: the final ids of its words (final[prov] >= 0; < 0 drops the word), then, when
// ngrams > 1, one id per word n-gram of length 2..ngrams, by start then by length:
// vocab + h % buckets with h = hash(t0); h = h * 116049371 + hash(t) (mod 2**64) over every
// token (dropped words included).
i64 ngram_count(i64 len, int ngrams) {
  i64 c = 0;
  for (int k = 1; k < ngrams; ++k) c += std::max<i64>(len - k, 0);
  return c;
}

template <class O>
void encode_fill(const i32* prov, const i64* off, i64 B, const i64* fin, const u64* wh, int ngrams, u64 buckets,
                 i64 vocab, const i64* out_off, O* out) {
#pragma omp parallel for schedule(dynamic, 256) num_threads(get_num_threads()) if (B > 256)
  for (i64 b = 0; b < B; ++b) {
    O* o = out + out_off[b];
    const i32* p = prov + off[b];
    const i64 len = off[b + 1] - off[b];
    for (i64 j = 0; j < len; ++j) {
      const i64 f = fin[p[j]];
      if (f >= 0) *o++ = static_cast<O>(f);
    }
    if (ngrams > 1) {
      for (i64 j = 0; j < len; ++j) {
        u64 h = wh[p[j]];
        for (int k = 1; k < ngrams && j + k < len; ++k) {
          h = h * NGRAM_MULT + wh[p[j + k]];
          *o++ = static_cast<O>(vocab + static_cast<i64>(h % buckets));
        }
      }
    }
  }
}

py::tuple tokenizer_encode(py::array prov, py::array offsets, py::array final_ids, py::object word_hash, int ngrams,
                           i64 buckets, i64 vocab, bool int32_out) {
  static const char* OP = "tokenizer_encode";
  const i32* p = cptr<i32>(prov, Dt::i32, OP, "prov");
  const i64* off = cptr<i64>(offsets, Dt::i64, OP, "offsets");
  const i64* fin = cptr<i64>(final_ids, Dt::i64, OP, "final");
  const i64 V = static_cast<i64>(final_ids.size()), N = static_cast<i64>(prov.size());
  const i64 B = static_cast<i64>(offsets.size()) - 1;
  if (B < 0) shape_error(OP, "offsets must have at least one entry");
  const u64* wh = nullptr;
  if (ngrams > 1) {
    py::array h = py::reinterpret_borrow<py::array>(word_hash);
    if (!h.dtype().is(py::dtype::of<u64>()) || !(h.flags() & py::array::c_style) || static_cast<i64>(h.size()) != V)
      shape_error(OP, "word_hash must be C-contiguous uint64 of the same size as final");
    wh = static_cast<const u64*>(h.data());
    if (buckets < 1) shape_error(OP, "buckets must be >= 1");
  }
  std::vector<i64> out_off(B + 1, 0);
  {
    py::gil_scoped_release nogil;
    if (first_bad_offset(off, B + 1, N) >= 0 || first_bad_id(p, N, V) >= 0) {
      py::gil_scoped_acquire gil;
      shape_error(OP, "prov / offsets out of range");
    }
#pragma omp parallel for schedule(dynamic, 256) num_threads(get_num_threads()) if (B > 256)
    for (i64 b = 0; b < B; ++b) {
      i64 c = 0;
      for (i64 j = off[b]; j < off[b + 1]; ++j) c += fin[p[j]] >= 0;
      out_off[b + 1] = c + ngram_count(off[b + 1] - off[b], ngrams);
    }
    for (i64 b = 0; b < B; ++b) out_off[b + 1] += out_off[b];
  }
  py::array ids = int32_out ? py::array(py::array_t<i32>(out_off[B])) : py::array(py::array_t<i64>(out_off[B]));
  void* o = ids.mutable_data();
  {
    py::gil_scoped_release nogil;
    if (int32_out) encode_fill(p, off, B, fin, wh, ngrams, static_cast<u64>(buckets), vocab, out_off.data(), static_cast<i32*>(o));
    else encode_fill(p, off, B, fin, wh, ngrams, static_cast<u64>(buckets), vocab, out_off.data(), static_cast<i64*>(o));
  }
  return py::make_tuple(ids, to_numpy(std::move(out_off)));
}

// ids + offsets -> a list of lists of int.  Each distinct id's int object is made once and
// shared (ints are immutable), which is most of the time a list of ints costs.
template <class I>
py::list lists_of(const I* ids, const i64* off, i64 B, i64 N) {
  i64 hi = -1;
  for (i64 k = 0; k < N; ++k) hi = std::max<i64>(hi, static_cast<i64>(ids[k]));
  const bool cache = hi < (i64{1} << 24);
  std::vector<PyObject*> objs(cache ? static_cast<std::size_t>(hi + 1) : 0, nullptr);
  struct Release {
    std::vector<PyObject*>& v;
    ~Release() {
      for (PyObject* o : v) Py_XDECREF(o);
    }
  } release{objs};
  py::list out(B);
  for (i64 b = 0; b < B; ++b) {
    const i64 s = off[b], n = off[b + 1] - s;
    PyObject* l = PyList_New(n);
    if (!l) throw py::error_already_set();
    PyList_SET_ITEM(out.ptr(), b, l);
    for (i64 j = 0; j < n; ++j) {
      const i64 v = static_cast<i64>(ids[s + j]);
      PyObject* x;
      if (cache && v >= 0) {
        x = objs[v];
        if (!x) {
          x = objs[v] = PyLong_FromLongLong(v);
          if (!x) throw py::error_already_set();
        }
        Py_INCREF(x);
      } else {
        x = PyLong_FromLongLong(v);
        if (!x) throw py::error_already_set();
      }
      PyList_SET_ITEM(l, j, x);
    }
  }
  return out;
}

py::list tokenizer_lists(py::array ids, py::array offsets) {
  static const char* OP = "tokenizer_lists";
  const i64* off = cptr<i64>(offsets, Dt::i64, OP, "offsets");
  const i64 B = static_cast<i64>(offsets.size()) - 1, N = static_cast<i64>(ids.size());
  if (B < 0) shape_error(OP, "offsets must have at least one entry");
  if (first_bad_offset(off, B + 1, N) >= 0) shape_error(OP, "offsets out of range");
  return with_index(ids, OP, "ids", [&](auto tt) {
    using I = decltype(tt);
    return lists_of<I>(cptr<I>(ids, dt_of<I>(), OP, "ids"), off, B, N);
  });
}

}  // namespace

void bind_tokenizer(py::module_& m) {
  m.def("tokenizer_unidata_version", []() { return std::string(tu::kUnidataVersion); },
        "the Unicode version of the lower-casing tables compiled in");
  m.def("tokenizer_fit", &tokenizer_fit, py::arg("texts"), py::arg("lower"), py::arg("strip_html"), py::arg("split"),
        py::arg("filters"), py::arg("lower_unicode"), py::arg("keep_ids"),
        "Tokenize a sequence of str (None if one is not an exact str): (words in first-seen order, counts int64, "
        "docs int64, word FNV-1a hashes uint64, per-token word ids int32 or None, token offsets int64 (B+1,), "
        "whether a lone surrogate was seen)");
  m.def("tokenizer_encode", &tokenizer_encode, py::arg("prov"), py::arg("offsets"), py::arg("final"),
        py::arg("word_hash"), py::arg("ngrams"), py::arg("buckets"), py::arg("vocab_size"), py::arg("int32"),
        "(ids, offsets): per text the final ids of its words (final < 0 drops one), then its n-gram ids");
  m.def("tokenizer_lists", &tokenizer_lists, py::arg("ids"), py::arg("offsets"),
        "ids + offsets (B+1,) -> list of B lists of int");
}

}  // namespace fastscale
