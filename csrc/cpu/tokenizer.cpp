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
  short fast[128];        // amap, with -2 for '<' when it may start a line break
  std::vector<u32> wide;  // sorted non-ASCII characters that end a token (filters, split)
  bool strip_html = true;
  bool lower_unicode = false;  // lower-case non-ASCII code points here (else: already done)
};

struct Text {
  const void* data;
  i64 len;
  int kind;  // 0: ASCII; else 1, 2 or 4 bytes per code point
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

FS_INLINE u64 load8(const unsigned char* p) {
  u64 w;
  std::memcpy(&w, p, 8);
  return w;
}

// Hash of a token zero-padded to whole 8-byte words, 8 bytes at a time (the word table's
// hash; the n-gram hash, FNV-1a, is computed once per distinct word at the end).  The
// first 16 bytes are mixed without a data-dependent branch (bytes 8..15 masked off for a
// short token: they may belong to the next one).
FS_INLINE u32 word_hash(const unsigned char* p, u32 n) {
  u64 h = (n + 1) * 0x9E3779B97F4A7C15ull;
  h = (h ^ load8(p)) * 0xBF58476D1CE4E5B9ull;
  h = (h ^ (h >> 31) ^ (load8(p + 8) & (u64{0} - (n > 8)))) * 0x94D049BB133111EBull;
  for (u32 k = 16; k < n; k += 8) h = (h ^ (h >> 29) ^ load8(p + k)) * 0xBF58476D1CE4E5B9ull;
  h ^= h >> 32;
  return static_cast<u32>(h);
}

// One text's tokens: their UTF-8 bytes back to back, each zero-padded to whole 8-byte words
// (the word table hashes and compares words), and per token its start, length and hash.
// A whole text is tokenized before its words are looked up, so that the lookups can
// prefetch the table a few tokens ahead.
struct Tokens {
  struct Tok {
    u64 start;
    u32 len, hash;
  };
  std::vector<unsigned char> v;
  unsigned char* p = nullptr;
  std::size_t n = 0, cap = 0, cur = 0;  // bytes used; start of the current token
  std::vector<Tok> tv;                  // tokens tv[0:nt] (grown by hand: push is hot)
  std::size_t nt = 0;
  bool surrogate = false;  // a lone surrogate was encoded (Python's str.encode would raise)

  void clear() { n = cur = nt = 0; }
  const Tok* toks() const { return tv.data(); }
  void reserve(std::size_t need) {  // room for `need` more bytes, plus 24 spare for padding
    if (n + need <= cap) return;
    v.resize(std::max<std::size_t>(1024, 2 * (n + need + 24)));
    p = v.data();
    cap = v.size() - 24;
  }
  FS_INLINE void byte(unsigned char c) {
    if (n >= cap) reserve(1);
    p[n++] = c;
  }
  FS_INLINE void end_token() {
    if (n == cur) return;
    const u32 len = static_cast<u32>(n - cur);
    std::memset(p + n, 0, 16);
    if (nt == tv.size()) tv.resize(std::max<std::size_t>(256, 2 * nt));
    tv[nt++] = Tok{cur, len, 0};  // hashed later: a load over bytes just stored one by one stalls
    n = cur = cur + ((len + 7) & ~u32{7});
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

// An ASCII text: its bytes are its code points and its UTF-8 at once.  The hot loop keeps
// the output position in registers (stores through unsigned char* alias everything).
void scan_ascii(const unsigned char* s, i64 n, const Rules& R, Tokens& T) {
  T.reserve(4 * static_cast<std::size_t>(n) + 16);  // a 1-byte token per 2 bytes pads to 8
  unsigned char* out = T.p;
  std::size_t k = T.n, cur = T.cur;
  for (i64 i = 0; i < n; ++i) {
    short v = R.fast[s[i]];
    if (__builtin_expect(v == -2, 0)) {  // '<' with strip_html: a line break reads as ' '
      const i64 m = br_len(s, i, n);
      v = m ? R.amap[' '] : R.amap['<'];
      i += m ? m - 1 : 0;
    }
    // Branch-free append (a separator's byte is written and then overwritten): the only
    // unpredictable branch left is the end of a token.
    out[k] = static_cast<unsigned char>(v);
    k += v >= 0;
    if (v < 0 && k != cur) {
      T.n = k;
      T.end_token();
      k = cur = T.n;
    }
  }
  T.n = k;
  T.end_token();
}

// Any text (1, 2 or 4 bytes per code point), with Unicode lower-casing.
template <class C>
void scan_text(const C* s, i64 n, const Rules& R, const LowerTable& L, Tokens& T) {
  // One (already lower-cased) code point: part of the token or a separator.
  auto feed = [&](u32 c) {
    if (c < 128) {
      const short v = R.amap[c];
      if (v < 0) T.end_token();
      else T.byte(static_cast<unsigned char>(v));
    } else if (!R.wide.empty() && std::binary_search(R.wide.begin(), R.wide.end(), c)) {
      T.end_token();
    } else {
      T.cp(c);
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
      feed(c);  // ASCII lower-casing is in the table
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
  T.end_token();
}

FS_INLINE void scan(const Text& t, const Rules& R, const LowerTable& L, Tokens& T) {
  T.clear();
  switch (t.kind) {
    case 0: scan_ascii(static_cast<const unsigned char*>(t.data), t.len, R, T); break;
    case 1: scan_text(static_cast<const std::uint8_t*>(t.data), t.len, R, L, T); break;
    case 2: scan_text(static_cast<const std::uint16_t*>(t.data), t.len, R, L, T); break;
    default: scan_text(static_cast<const std::uint32_t*>(t.data), t.len, R, L, T); break;
  }
}

// ---------------------------------------------------------------- word table
// UTF-8 bytes -> dense id in first-insert order, with the word's count, documents, and the
// last text that counted it.  Open addressing (linear probing, <= 1/2 full); one 64-byte
// entry per word keeps its first 24 bytes, so a lookup of a word of <= 24 bytes touches a
// slot and an entry and nothing else.
struct WordTable {
  struct Slot {
    u32 hash, id1;  // id1 = id + 1; 0 = empty
  };
  struct alignas(64) Entry {
    u64 pre[3];  // the first 24 bytes, zero-padded
    u32 len, hash;
    u64 start;  // offset in `bytes`
    i64 count, docs, last;
  };
  std::vector<Slot> slots;
  int shift = 0;
  std::vector<Entry> e;
  std::vector<unsigned char> bytes;  // every word's bytes, back to back

  WordTable() { rehash(1 << 12); }
  u32 size() const { return static_cast<u32>(e.size()); }
  FS_INLINE std::size_t slot_of(u32 h) const { return (h * 0x9E3779B1u) >> shift; }
  void rehash(std::size_t cap) {
    slots.assign(cap, Slot{0, 0});
    shift = 32 - __builtin_ctzll(cap);
    const std::size_t mask = cap - 1;
    for (u32 id = 0; id < size(); ++id) {
      std::size_t k = slot_of(e[id].hash);
      while (slots[k].id1) k = (k + 1) & mask;
      slots[k] = Slot{e[id].hash, id + 1};
    }
  }
  FS_INLINE bool same(const Entry& x, const unsigned char* p, u32 n) const {
    if (x.len != n) return false;
    const u32 m = n < 24 ? n : 24;
    for (u32 k = 0; k < m; k += 8)
      if (x.pre[k / 8] != load8(p + k)) return false;
    return n <= 24 || std::memcmp(bytes.data() + x.start + 24, p + 24, n - 24) == 0;
  }
  FS_INLINE void prefetch_slot(u32 h) const { __builtin_prefetch(&slots[slot_of(h)]); }
  // The entry the word with hash h most likely has (its slot was prefetched earlier).
  FS_INLINE void prefetch_entry(u32 h) const {
    const Slot sl = slots[slot_of(h)];
    if (sl.id1) __builtin_prefetch(&e[sl.id1 - 1]);
  }
  // The id of the word p[0:n] (zero-padded to a multiple of 8), inserting it if new.
  FS_INLINE u32 get_or_add(const unsigned char* p, u32 n, u32 h) {
    const std::size_t mask = slots.size() - 1;
    std::size_t k = slot_of(h);
    for (;;) {
      const Slot sl = slots[k];
      if (!sl.id1) break;
      if (sl.hash == h && same(e[sl.id1 - 1], p, n)) return sl.id1 - 1;
      k = (k + 1) & mask;
    }
    const u32 id = size();
    slots[k] = Slot{h, id + 1};
    Entry x{};
    for (u32 j = 0; j < n && j < 24; j += 8) x.pre[j / 8] = load8(p + j);
    x.len = n;
    x.hash = h;
    x.start = bytes.size();
    x.last = -1;
    e.push_back(x);
    bytes.insert(bytes.end(), p, p + n);
    if (2 * (static_cast<std::size_t>(id) + 1) > slots.size()) rehash(slots.size() * 2);
    return id;
  }
};

// One thread's share of a fit: a contiguous range of texts.
struct Part {
  WordTable words;
  std::vector<i32> ids;  // per token, the id in `words` (kept only when asked for)
  i64 ntok = 0;
  bool surrogate = false;
};

void fit_part(const Text* texts, i64 b0, i64 b1, const Rules& R, const LowerTable& L, bool keep_ids, i64* lens,
              Part& P) {
  Tokens T;
  WordTable& W = P.words;
  for (i64 b = b0; b < b1; ++b) {
    scan(texts[b], R, L, T);
    const i64 nt = static_cast<i64>(T.nt);
    Tokens::Tok* tk = T.tv.data();
    for (i64 j = 0; j < nt; ++j) tk[j].hash = word_hash(T.p + tk[j].start, tk[j].len);
    i32* ids = nullptr;
    if (keep_ids) {
      P.ids.resize(P.ids.size() + nt);
      ids = P.ids.data() + P.ids.size() - nt;
    }
    for (i64 j = 0; j < nt; ++j) {
      // Table memory a few tokens ahead: the slot, then (once it has arrived) the entry.
      if (j + 8 < nt) W.prefetch_slot(tk[j + 8].hash);
      if (j + 4 < nt) W.prefetch_entry(tk[j + 4].hash);
      const u32 id = W.get_or_add(T.p + tk[j].start, tk[j].len, tk[j].hash);
      WordTable::Entry& x = W.e[id];
      ++x.count;
      if (x.last != b) {  // each text counts once per word
        x.last = b;
        ++x.docs;
      }
      if (ids) ids[j] = static_cast<i32>(id);
    }
    lens[b] = nt;
    P.ntok += nt;
  }
  P.surrogate = T.surrogate;
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
  std::copy(R.amap, R.amap + 128, R.fast);
  if (strip_html) R.fast['<'] = -2;
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
                         bool lower_unicode, bool keep_ids, i64 parallel_min_chars) {
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
    refs[b] = Text{PyUnicode_DATA(t), static_cast<i64>(PyUnicode_GET_LENGTH(t)),
                   PyUnicode_IS_ASCII(t) ? 0 : static_cast<int>(PyUnicode_KIND(t))};
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
    // Small inputs on one thread (a parallel region costs more than they do).
    // Small inputs on one thread (a parallel region costs more than they do).  Otherwise 4
    // ranges per thread, taken dynamically: a thread that the OS delays (the machine is
    // shared) holds up less; merging 4x as many tables costs a few ms.
    const int nthreads = chars < parallel_min_chars ? 1 : std::max(1, get_num_threads());
    const int nparts = nthreads == 1 ? 1 : 4 * nthreads;
    const std::vector<i64> bounds = split_ranges(refs, nparts);
    for (int p = 0; p < nparts; ++p) parts.emplace_back(new Part());
    Failure fail;
    i64* lens = offsets.data() + 1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (nthreads > 1)
    for (int p = 0; p < nparts; ++p)
      fail.run([&] { fit_part(refs.data(), bounds[p], bounds[p + 1], R, L, keep_ids, lens, *parts[p]); });
    fail.check();

    // Merge in range order: part 0's table is the start, later parts append their new words
    // in their own first-seen order.
    std::vector<std::vector<i32>> remap(nparts);
    WordTable& G = parts[0]->words;
    std::vector<unsigned char> key;
    for (int p = 1; p < nparts; ++p) {
      WordTable& W = parts[p]->words;
      remap[p].resize(W.size());
      for (u32 l = 0; l < W.size(); ++l) {
        const WordTable::Entry& x = W.e[l];
        key.assign(W.bytes.data() + x.start, W.bytes.data() + x.start + x.len);
        key.resize(x.len + 16, 0);
        const u32 g = G.get_or_add(key.data(), x.len, x.hash);
        G.e[g].count += x.count;
        G.e[g].docs += x.docs;
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
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (nthreads > 1)
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
  counts.resize(V);
  docs.resize(V);
  for (u32 g = 0; g < V; ++g) {
    const WordTable::Entry& x = G.e[g];
    const char* b = reinterpret_cast<const char*>(G.bytes.data() + x.start);
    // surrogatepass: a lone surrogate in a text comes back as itself, as Python's split keeps it.
    PyObject* w = PyUnicode_DecodeUTF8(b, x.len, "surrogatepass");
    if (!w) throw py::error_already_set();
    PyList_SET_ITEM(words.ptr(), g, w);
    u32 h = FNV_OFFSET;  // the n-gram hash of a word: 32-bit FNV-1a of its UTF-8 bytes
    for (u32 k = 0; k < x.len; ++k) h = (h ^ static_cast<unsigned char>(b[k])) * FNV_PRIME;
    whash[g] = h;
    counts[g] = x.count;
    docs[g] = x.docs;
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
struct Encoding {
  const i32* prov;
  const i64* off;
  const i64* fin;
  const u64* wh;  // per word; used when ngrams > 1
  int ngrams;
  u64 buckets;
  i64 vocab;

  FS_INLINE i64 count(i64 b) const {
    i64 c = 0;
    const i64 len = off[b + 1] - off[b];
    for (i64 j = off[b]; j < off[b + 1]; ++j) c += fin[prov[j]] >= 0;
    for (int k = 1; k < ngrams; ++k) c += std::max<i64>(len - k, 0);
    return c;
  }
  template <class Put>
  FS_INLINE void emit(i64 b, Put&& put) const {
    const i32* p = prov + off[b];
    const i64 len = off[b + 1] - off[b];
    for (i64 j = 0; j < len; ++j) {
      const i64 f = fin[p[j]];
      if (f >= 0) put(f);
    }
    if (ngrams > 1) {
      for (i64 j = 0; j < len; ++j) {
        u64 h = wh[p[j]];
        for (int k = 1; k < ngrams && j + k < len; ++k) {
          h = h * NGRAM_MULT + wh[p[j + k]];
          put(vocab + static_cast<i64>(h % buckets));
        }
      }
    }
  }
};

// Python's cyclic GC, off while a batch of lists is made: each new list would otherwise
// count towards a collection that traverses every list made so far (quadratic-ish work).
struct GcPause {
  int was;
  GcPause() : was(PyGC_Disable()) {}
  ~GcPause() {
    if (was) PyGC_Enable();
  }
};

// Int objects for 0..n-1, each made on first use and shared (ints are immutable): most of
// what a list of ints costs is making its ints.
struct IntCache {
  std::vector<PyObject*> objs;
  explicit IntCache(i64 n) : objs(static_cast<std::size_t>(std::max<i64>(n, 0)), nullptr) {}
  ~IntCache() {
    for (PyObject* o : objs) Py_XDECREF(o);
  }
  FS_INLINE PyObject* get(i64 v) {
    PyObject* x;
    if (v >= 0 && v < static_cast<i64>(objs.size())) {
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
    return x;
  }
};

py::object tokenizer_encode(py::array prov, py::array offsets, py::array final_ids, py::object word_hash, int ngrams,
                            i64 buckets, i64 vocab, bool int32_out, bool as_lists) {
  static const char* OP = "tokenizer_encode";
  Encoding E{};
  E.prov = cptr<i32>(prov, Dt::i32, OP, "prov");
  E.off = cptr<i64>(offsets, Dt::i64, OP, "offsets");
  E.fin = cptr<i64>(final_ids, Dt::i64, OP, "final");
  E.ngrams = ngrams;
  E.vocab = vocab;
  const i64 V = static_cast<i64>(final_ids.size()), N = static_cast<i64>(prov.size());
  const i64 B = static_cast<i64>(offsets.size()) - 1;
  if (B < 0) shape_error(OP, "offsets must have at least one entry");
  if (ngrams > 1) {
    py::array h = py::reinterpret_borrow<py::array>(word_hash);
    if (!h.dtype().is(py::dtype::of<u64>()) || !(h.flags() & py::array::c_style) || static_cast<i64>(h.size()) != V)
      shape_error(OP, "word_hash must be C-contiguous uint64 of the same size as final");
    if (buckets < 1) shape_error(OP, "buckets must be >= 1");
    E.wh = static_cast<const u64*>(h.data());
    E.buckets = static_cast<u64>(buckets);
  }
  std::vector<i64> out_off(B + 1, 0);
  i64 hi = -1;
  {
    py::gil_scoped_release nogil;
    bool bad = first_bad_offset(E.off, B + 1, N) >= 0 || first_bad_id(E.prov, N, V) >= 0;
    if (!bad) {
#pragma omp parallel for schedule(dynamic, 256) num_threads(get_num_threads()) if (B > 256)
      for (i64 b = 0; b < B; ++b) out_off[b + 1] = E.count(b);
      for (i64 b = 0; b < B; ++b) out_off[b + 1] += out_off[b];
      for (i64 v = 0; v < V; ++v) hi = std::max(hi, E.fin[v]);
    }
    if (bad) {
      py::gil_scoped_acquire gil;
      shape_error(OP, "prov / offsets out of range");
    }
  }
  if (as_lists) {
    // Word ids repeat (Zipf): shared ints.  N-gram ids are spread over the buckets: a
    // cache of them would be a random access into megabytes per id, slower than a new int.
    IntCache ints(std::min<i64>(hi + 1, i64{1} << 24));
    GcPause pause;
    py::list out(B);
    for (i64 b = 0; b < B; ++b) {
      PyObject* l = PyList_New(out_off[b + 1] - out_off[b]);
      if (!l) throw py::error_already_set();
      PyList_SET_ITEM(out.ptr(), b, l);
      Py_ssize_t j = 0;
      E.emit(b, [&](i64 v) { PyList_SET_ITEM(l, j++, ints.get(v)); });
    }
    return out;
  }
  py::array ids = int32_out ? py::array(py::array_t<i32>(out_off[B])) : py::array(py::array_t<i64>(out_off[B]));
  void* o = ids.mutable_data();
  {
    py::gil_scoped_release nogil;
    const i64* oo = out_off.data();
#pragma omp parallel for schedule(dynamic, 256) num_threads(get_num_threads()) if (B > 256)
    for (i64 b = 0; b < B; ++b) {
      if (int32_out) {
        i32* q = static_cast<i32*>(o) + oo[b];
        E.emit(b, [&](i64 v) { *q++ = static_cast<i32>(v); });
      } else {
        i64* q = static_cast<i64*>(o) + oo[b];
        E.emit(b, [&](i64 v) { *q++ = v; });
      }
    }
  }
  return py::make_tuple(ids, to_numpy(std::move(out_off)));
}

}  // namespace

void bind_tokenizer(py::module_& m) {
  m.def("tokenizer_unidata_version", []() { return std::string(tu::kUnidataVersion); },
        "the Unicode version of the lower-casing tables compiled in");
  m.def("tokenizer_fit", &tokenizer_fit, py::arg("texts"), py::arg("lower"), py::arg("strip_html"), py::arg("split"),
        py::arg("filters"), py::arg("lower_unicode"), py::arg("keep_ids"), py::arg("parallel_min_chars") = 1 << 16,
        "Tokenize a sequence of str (None if one is not an exact str): (words in first-seen order, counts int64, "
        "docs int64, word FNV-1a hashes uint64, per-token word ids int32 or None, token offsets int64 (B+1,), "
        "whether a lone surrogate was seen)");
  m.def("tokenizer_encode", &tokenizer_encode, py::arg("prov"), py::arg("offsets"), py::arg("final"),
        py::arg("word_hash"), py::arg("ngrams"), py::arg("buckets"), py::arg("vocab_size"), py::arg("int32"),
        py::arg("as_lists"),
        "per text the final ids of its words (final < 0 drops one), then its n-gram ids: a list of lists of "
        "int (as_lists), else (ids int32 / int64, offsets int64 (B+1,))");
}

}  // namespace fastscale
