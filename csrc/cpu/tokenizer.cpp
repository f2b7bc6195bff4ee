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
// token; empty tokens are dropped.  A text is lower-cased into UTF-8 bytes with separators
// marked, split 64 bytes at a time, and its tokens looked up by a 64-bit hash of their bytes
// (see "one text -> tokens").  The n-gram hash of a word, 32-bit FNV-1a of its UTF-8 bytes,
// is computed once per distinct word at the end.
//
// fit: threads own contiguous ranges of texts, each with its own word table (words in
// first-seen order, counts, documents); the tables are merged in range order, so the merged
// first-seen order is Keras' (texts in order, words within a text in order) for any thread
// count.  The per-token provisional ids are kept so that encoding the fitted texts again
// needs no second pass over the text.
//
// encode: ids as arrays (all threads), or as Keras' lists of int: int objects shared per
// id, the lists' slots stored by all threads (see "Lists of ints made fast").
#include <omp.h>
#ifdef __linux__
#include <sys/mman.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
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
  short amap[128];          // ASCII: the (lower-cased) character, or -1 when it ends a token
  unsigned char map8[128];  // amap as one byte: SEP for a separator
  std::vector<u32> wide;    // sorted non-ASCII characters that end a token (filters, split)
  bool strip_html = true;
  bool lower_unicode = false;  // lower-case non-ASCII code points here (else: already done)
  bool space_sep = true;       // ' ' ends a token (then a stripped line break is separators only)
  bool lower = true;
  bool avx2 = false;               // normalise ASCII 32 bytes at a time
  unsigned char sep_nibble[16];  // bit h of [l]: the ASCII character 16 h + l ends a token
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

// ---------------------------------------------------------------- one text -> tokens
// A text is tokenized in three passes over flat memory, each without a data-dependent
// branch per character:
//   1. normalise: the text's lower-cased UTF-8 with every separator byte replaced by SEP
//      (0xFF, never part of UTF-8), into `lo`, followed by PAD bytes of SEP;
//   2. split: 64 bytes at a time, the SEP bytes as a bit mask; the bits where a token starts
//      and where it ends give the tokens;
//   3. key: per token its first 16 bytes, the bytes past its end set to SEP (so a token of
//      < 16 bytes is its key: no 0xFF inside a token), and a 64-bit hash of all its bytes.
// The tokens then go to the word table, whose slots are prefetched a few tokens ahead.
constexpr unsigned char SEP = 0xFF;
constexpr i64 PAD = 64;
constexpr u32 KEYW = 2;  // 8-byte words of a token's key (the word table keeps them in the slot)

// Memory for the scratch and result arrays.  A large block (>= 1 MiB: the token ids, the
// word tables) comes straight from the kernel (mmap) with huge pages requested: zero-filled
// without a memset, a page fault per 2 MiB instead of per 4 KiB, grown in place (mremap),
// and returned at once when freed.  Smaller blocks come from malloc.
namespace mem {
constexpr std::size_t BIG = std::size_t{1} << 20;
inline bool big(std::size_t bytes) {
#if defined(__linux__) && !defined(__SANITIZE_ADDRESS__)  // AddressSanitizer checks malloc's blocks only
  return bytes >= BIG;
#else
  return false;
#endif
}
inline void* alloc(std::size_t bytes, bool zero) {
#ifdef __linux__
  if (big(bytes)) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    madvise(p, bytes, MADV_HUGEPAGE);
    return p;
  }
#endif
  void* p = zero ? std::calloc(bytes ? bytes : 1, 1) : std::malloc(bytes ? bytes : 1);
  if (!p) throw std::bad_alloc();
  return p;
}
inline void release(void* p, std::size_t bytes) {
  if (!p) return;
#ifdef __linux__
  if (big(bytes)) {
    munmap(p, bytes);
    return;
  }
#endif
  std::free(p);
}
// A block of `bytes` resized to `want` bytes, its first `keep` bytes kept.  Whether a block
// is mapped follows from its size (release), so mremap only keeps a big block big.
inline void* grow(void* p, std::size_t bytes, std::size_t want, std::size_t keep) {
#ifdef __linux__
  if (p && big(bytes) && big(want)) {
    void* q = mremap(p, bytes, want, MREMAP_MAYMOVE);
    if (q == MAP_FAILED) throw std::bad_alloc();
    madvise(q, want, MADV_HUGEPAGE);
    return q;
  }
#endif
  void* q = alloc(want, false);
  if (keep) std::memcpy(q, p, keep);
  release(p, bytes);
  return q;
}
}  // namespace mem

// Growable array of a trivially copyable type, not zero-filled (std::vector::resize is):
// the scratch buffers are sized for the largest text and rewritten per text.
template <class T>
struct Buf {
  T* p = nullptr;
  std::size_t cap = 0;
  Buf() = default;
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() { mem::release(p, cap * sizeof(T)); }
  // Room for n elements; the first `keep` are kept.
  void reserve(std::size_t n, std::size_t keep = 0) {
    if (n <= cap) return;
    const std::size_t c = std::max<std::size_t>({n, 2 * cap, 64});
    p = static_cast<T*>(mem::grow(p, cap * sizeof(T), c * sizeof(T), keep * sizeof(T)));
    cap = c;
  }
  // Exactly n elements (the first min(n, cap) kept).
  void resize_exact(std::size_t n) {
    if (n == cap) return;
    p = static_cast<T*>(mem::grow(p, cap * sizeof(T), n * sizeof(T), std::min(n, cap) * sizeof(T)));
    cap = n;
  }
};

// The first n elements of a Buf as a NumPy array that owns the memory.
template <class T>
py::array_t<T> buf_to_numpy(Buf<T>& b, std::size_t n) {
  b.resize_exact(std::max<std::size_t>(n, 1));
  struct Owner {
    void* p;
    std::size_t bytes;
  };
  auto* o = new Owner{b.p, b.cap * sizeof(T)};
  b.p = nullptr;
  b.cap = 0;
  py::capsule owner(o, [](void* q) {
    auto* w = static_cast<Owner*>(q);
    mem::release(w->p, w->bytes);
    delete w;
  });
  return py::array_t<T>({static_cast<py::ssize_t>(n)}, {static_cast<py::ssize_t>(sizeof(T))}, static_cast<T*>(o->p),
                        owner);
}

struct Scratch {
  Buf<unsigned char> lo;  // pass 1
  i64 n = 0;              // bytes in lo before the padding
  Buf<i64> starts, ends;  // pass 2
  struct Tok {
    u64 key[KEYW], hash;  // key: key_word 0..KEYW-1
    i64 start;
    u32 len;
  };
  Buf<Tok> toks;  // pass 3
  i64 nt = 0;
  bool surrogate = false;  // a lone surrogate was encoded (Python's str.encode would raise)
};

// Pass 1 for a text of any kind: the general code (Unicode lower case, wide separators,
// a line break read as ' ').  Writes scratch.lo[0:n].
struct Writer {
  Buf<unsigned char>& b;
  std::size_t n = 0;
  bool surrogate = false;
  FS_INLINE void byte(unsigned char c) {
    if (n >= b.cap) b.reserve(n + 1, n);
    b.p[n++] = c;
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

template <class C>
void normalise_text(const C* s, i64 n, const Rules& R, const LowerTable& L, Scratch& S) {
  S.lo.reserve(static_cast<std::size_t>(n) * (sizeof(C) == 1 ? 2 : 3) + PAD);
  Writer W{S.lo};
  // One (already lower-cased) code point: its bytes, or SEP.
  auto feed = [&](u32 c) {
    if (c < 128) {
      W.byte(R.map8[c]);
    } else if (!R.wide.empty() && std::binary_search(R.wide.begin(), R.wide.end(), c)) {
      W.byte(SEP);
    } else {
      W.cp(c);
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
      W.byte(R.map8[c]);  // ASCII lower-casing is in the table
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
  S.n = static_cast<i64>(W.n);
  S.surrogate |= W.surrogate;
}

#if FS_X86
// lo[0:n] = R.map8[s[0:n]] for ASCII s, 32 bytes at a time: 'A'-'Z' + 32 (when lowering),
// then SEP where the (lower-cased) character is a separator, looked up in a 128-bit set by
// its two nibbles (pshufb).
FS_TARGET_AVX2 i64 map_ascii_avx2(const unsigned char* s, i64 n, const Rules& R, unsigned char* lo) {
  const __m256i nib = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(R.sep_nibble)));
  const __m256i bit = _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 0, 0, 0, 0, 0, 0, 0, 0,  //
                                       1, 2, 4, 8, 16, 32, 64, -128, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m256i a1 = _mm256_set1_epi8('A' - 1), z1 = _mm256_set1_epi8('Z' + 1);
  const __m256i case_bit = _mm256_set1_epi8(R.lower ? 0x20 : 0), low4 = _mm256_set1_epi8(0x0F);
  const __m256i zero = _mm256_setzero_si256();
  i64 i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i));
    const __m256i upper = _mm256_and_si256(_mm256_cmpgt_epi8(v, a1), _mm256_cmpgt_epi8(z1, v));
    v = _mm256_add_epi8(v, _mm256_and_si256(upper, case_bit));
    const __m256i row = _mm256_shuffle_epi8(nib, _mm256_and_si256(v, low4));
    const __m256i col = _mm256_shuffle_epi8(bit, _mm256_and_si256(_mm256_srli_epi16(v, 4), low4));
    const __m256i keep = _mm256_cmpeq_epi8(_mm256_and_si256(row, col), zero);  // 0xFF: not a separator
    v = _mm256_or_si256(v, _mm256_xor_si256(keep, _mm256_set1_epi8(-1)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(lo + i), v);
  }
  return i;
}
#endif

// Pass 1 for an ASCII text: its bytes are its code points and its UTF-8 at once, so the
// lower case and the separators are a table lookup per byte (vectorised with AVX2); line
// breaks (rare) are found afterwards with memchr and overwritten with SEP.
void normalise_ascii(const unsigned char* s, i64 n, const Rules& R, Scratch& S) {
  S.lo.reserve(static_cast<std::size_t>(n) + PAD);
  unsigned char* FS_RESTRICT lo = S.lo.p;
  const unsigned char* FS_RESTRICT map = R.map8;
  i64 i = 0;
#if FS_X86
  if (R.avx2) i = map_ascii_avx2(s, n, R, lo);
#endif
  for (; i < n; ++i) lo[i] = map[s[i]];
  if (R.strip_html) {
    const unsigned char* q = s;
    while ((q = static_cast<const unsigned char*>(std::memchr(q, '<', static_cast<std::size_t>(s + n - q))))) {
      const i64 i = q - s, m = br_len(s, i, n);
      if (m) std::memset(lo + i, SEP, static_cast<std::size_t>(m));  // one ' ', a separator (R.space_sep)
      q += m ? m : 1;
    }
  }
  S.n = n;
}

// Bit k of the result: p[k] == SEP, for k < 64.
FS_INLINE u64 sep_mask64(const unsigned char* p) {
#if FS_X86
  const __m128i ff = _mm_set1_epi8(static_cast<char>(SEP));
  const u64 m0 = static_cast<u32>(_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), ff)));
  const u64 m1 = static_cast<u32>(_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16)), ff)));
  const u64 m2 = static_cast<u32>(_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 32)), ff)));
  const u64 m3 = static_cast<u32>(_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 48)), ff)));
  return m0 | (m1 << 16) | (m2 << 32) | (m3 << 48);
#else
  u64 m = 0;
  for (int k = 0; k < 64; ++k) m |= static_cast<u64>(p[k] == SEP) << k;
  return m;
#endif
}

// The positions of the set bits of m, plus base, appended at out (which has room for 64 more).
FS_INLINE i64* put_bits(u64 m, i64 base, i64* out) {
  while (m) {
    *out++ = base + __builtin_ctzll(m);
    m &= m - 1;
  }
  return out;
}


// Word k (k < KEYW) of a token's key: its bytes 8k..8k+7 with those past its end set to SEP.
// p must be readable up to 8 (k + 1) bytes (a token in lo: PAD bytes follow it).
FS_INLINE u64 key_word(const unsigned char* p, u32 n, u32 k) {
  const u32 own = n > 8 * k ? std::min<u32>(n - 8 * k, 8) : 0;  // bytes of the token in this word
  const u64 pad = own == 8 ? 0 : ~u64{0} << (8 * own);        // branch-free (cmov)
  return load8(p + 8 * k) | pad;
}
// The same for a word whose bytes may end (SEP-padded to a multiple of 8) at p + n.
FS_INLINE u64 key_word_stored(const unsigned char* p, u32 n, u32 k) {
  return 8 * k < n ? key_word(p, n, k) : ~u64{0};
}

// 64-bit hash of a token from its key words and, past 8 KEYW bytes, its other bytes.
FS_INLINE u64 word_hash(const unsigned char* p, u32 n, const u64* key) {
  u64 h = key[0] * 0x9E3779B97F4A7C15ull;
  h = (h ^ (h >> 29) ^ key[1]) * 0xBF58476D1CE4E5B9ull;
  for (u32 k = 8 * KEYW; k < n; k += 8) {
    u64 w = load8(p + k);
    if (n - k < 8) w |= ~u64{0} << (8 * (n - k));
    h = (h ^ (h >> 29) ^ w) * 0xBF58476D1CE4E5B9ull;
  }
  h ^= h >> 32;
  return h * 0x94D049BB133111EBull;
}

// Passes 2 and 3 over lo[0:n] (followed by PAD bytes of SEP).
void split_and_key(Scratch& S) {
  const i64 n = S.n;
  S.lo.reserve(static_cast<std::size_t>(n + PAD), static_cast<std::size_t>(n));
  std::memset(S.lo.p + n, SEP, PAD);
  const unsigned char* lo = S.lo.p;
  // A token is at most every other byte: n / 2 + 1 starts, + 64 for put_bits' slack.
  const std::size_t most = static_cast<std::size_t>(n / 2 + 1 + 64);
  S.starts.reserve(most);
  S.ends.reserve(most);
  i64 *st = S.starts.p, *en = S.ends.p;
  u64 prev_tok = 0;  // whether the byte before the block is in a token (bit 0)
  // Blocks up to and including the one holding lo[n] (a SEP): every token ends in them.
  for (i64 b = 0; b <= n; b += 64) {
    const u64 tok = ~sep_mask64(lo + b);
    const u64 before = (tok << 1) | prev_tok;  // bit k: byte k-1 is in a token
    st = put_bits(tok & ~before, b, st);
    en = put_bits(~tok & before, b, en);
    prev_tok = tok >> 63;
  }
  const i64 nt = st - S.starts.p;
  S.toks.reserve(static_cast<std::size_t>(nt));
  Scratch::Tok* tk = S.toks.p;
  const i64* e = S.ends.p;
  for (i64 j = 0; j < nt; ++j) {
    const i64 a = S.starts.p[j];
    if (e[j] - a > static_cast<i64>(UINT32_MAX)) throw std::length_error("tokenizer_fit: a token of 2**32 bytes or more");
    const u32 len = static_cast<u32>(e[j] - a);
    const unsigned char* p = lo + a;
    Scratch::Tok& t = tk[j];
    for (u32 k = 0; k < KEYW; ++k) t.key[k] = key_word(p, len, k);
    t.hash = word_hash(p, len, t.key);
    t.start = a;
    t.len = len;
  }
  S.nt = nt;
}

FS_INLINE void tokenize(const Text& t, const Rules& R, const LowerTable& L, Scratch& S) {
  switch (t.kind) {
    case 0:
      if (!R.strip_html || R.space_sep) normalise_ascii(static_cast<const unsigned char*>(t.data), t.len, R, S);
      else normalise_text(static_cast<const std::uint8_t*>(t.data), t.len, R, L, S);
      break;
    case 1: normalise_text(static_cast<const std::uint8_t*>(t.data), t.len, R, L, S); break;
    case 2: normalise_text(static_cast<const std::uint16_t*>(t.data), t.len, R, L, S); break;
    default: normalise_text(static_cast<const std::uint32_t*>(t.data), t.len, R, L, S); break;
  }
  split_and_key(S);
}

// ---------------------------------------------------------------- word table
// UTF-8 bytes -> dense id in first-insert order, with the word's count, documents and the
// last text that counted it.  Open addressing (linear probing, <= 1/2 full), 32-byte slots.
// A slot holds the word's first 16 bytes (SEP-padded: a word of < 16 bytes is its key)
// and its stats, so a word of <= 16 bytes (nearly all) is found and counted by touching its
// slot alone; a longer one is flagged and also compares its length and other bytes.
// Counts and documents are 32-bit in the slot; a wrap adds 2**32 to the word's 64-bit
// overflow (`high`), which a fit of fewer than 2**32 tokens never touches.
struct WordTable {
  static constexpr u32 LONG = 0x80000000u;
  struct Slot {
    u64 key[KEYW];
    u32 id1;  // id + 1 (0 = empty), | LONG for a word of more than 8 KEYW bytes
    u32 count, docs, last;  // last: 1 + the index (in its part) of the last text that counted it
  };
  Slot* slots = nullptr;  // nslots zero-initialised slots (mem::alloc)
  std::size_t nslots = 0;
  int shift = 0;
  std::vector<u32> where, len;       // per id: its slot, its length
  std::vector<u64> start, hash;      // per id: offset of its bytes in `bytes`, its hash
  std::vector<unsigned char> bytes;  // every word's bytes, each SEP-padded to a multiple of 8
  std::vector<std::pair<u32, u64>> high;  // (id, 2**32 per wrap of count) / docs: (id | LONG, ...)

  WordTable() { rehash(1 << 12); }
  ~WordTable() { mem::release(slots, nslots * sizeof(Slot)); }
  WordTable(const WordTable&) = delete;
  WordTable& operator=(const WordTable&) = delete;
  u32 size() const { return static_cast<u32>(where.size()); }
  const Slot& of(u32 id) const { return slots[where[id]]; }
  FS_INLINE std::size_t slot_of(u64 h) const { return static_cast<std::size_t>(h >> shift); }
  void rehash(std::size_t cap) {
    Slot* old = slots;
    const std::size_t nold = nslots;
    slots = static_cast<Slot*>(mem::alloc(cap * sizeof(Slot), true));
    nslots = cap;
    shift = 64 - __builtin_ctzll(cap);
    const std::size_t mask = cap - 1;
    for (u32 id = 0; id < size(); ++id) {
      std::size_t k = slot_of(hash[id]);
      while (slots[k].id1) k = (k + 1) & mask;
      slots[k] = old[where[id]];
      where[id] = static_cast<u32>(k);
    }
    mem::release(old, nold * sizeof(Slot));
  }
  FS_INLINE void prefetch(u64 h) const { __builtin_prefetch(&slots[slot_of(h)]); }
  // Word `id` is p[0:n], given equal keys (p readable up to a multiple of 8 past n).
  FS_INLINE bool same_long(u32 id, const unsigned char* p, u32 n) const {
    if (len[id] != n) return false;
    const unsigned char* q = bytes.data() + start[id];
    for (u32 k = 8 * KEYW; k < n; k += 8) {
      u64 w = load8(p + k);
      if (n - k < 8) w |= ~u64{0} << (8 * (n - k));
      if (w != load8(q + k)) return false;
    }
    return true;
  }
  // The slot of the word p[0:n] with this key (key_word 0..KEYW-1) and hash if present, else
  // the empty slot where it would go.
  FS_INLINE std::size_t find(const unsigned char* p, u32 n, const u64* key, u64 h) const {
    const std::size_t mask = nslots - 1;
    const u32 lng = n > 8 * KEYW ? LONG : 0;
    std::size_t k = slot_of(h);
    for (;;) {
      const Slot& sl = slots[k];
      if (!sl.id1) return k;
      if (((sl.key[0] ^ key[0]) | (sl.key[1] ^ key[1]) | ((sl.id1 & LONG) ^ lng)) == 0 &&
          (!lng || same_long((sl.id1 & ~LONG) - 1, p, n)))
        return k;
      k = (k + 1) & mask;
    }
  }
  // The slot of the word, inserting it if new.
  FS_INLINE Slot& get_or_add(const unsigned char* p, u32 n, const u64* key, u64 h) {
    const std::size_t k = find(p, n, key, h);
    return slots[k].id1 ? slots[k] : add(k, p, n, key, h);
  }
  // Room for `more` words without a rehash.
  void reserve_more(std::size_t more) {
    std::size_t cap = nslots;
    while (2 * (size() + more) > cap) cap *= 2;
    if (cap != nslots) rehash(cap);
  }
  Slot& add(std::size_t k, const unsigned char* p, u32 n, const u64* key, u64 h) {
    if (size() >= static_cast<u32>(INT32_MAX)) throw std::length_error("tokenizer_fit: more than 2**31 distinct words");
    const u32 id = size();
    slots[k] = Slot{{key[0], key[1]}, (id + 1) | (n > 8 * KEYW ? LONG : 0), 0, 0, 0};
    where.push_back(static_cast<u32>(k));
    len.push_back(n);
    start.push_back(bytes.size());
    hash.push_back(h);
    bytes.insert(bytes.end(), p, p + n);
    bytes.resize(bytes.size() + (8 - n % 8) % 8, SEP);
    if (2 * (static_cast<std::size_t>(id) + 1) > nslots) rehash(nslots * 2);
    return slots[where[id]];
  }
  static u32 id_of(const Slot& sl) { return (sl.id1 & ~LONG) - 1; }
  // One more occurrence of the word in slot x, in text tb.
  FS_INLINE void count(Slot& x, u32 tb) {
    if (__builtin_expect(++x.count == 0, 0)) high.emplace_back(id_of(x), u64{1} << 32);
    const u32 seen = x.last != tb;  // each text counts once per word (branch-free)
    x.docs += seen;
    x.last = tb;
    if (__builtin_expect(seen & (x.docs == 0), 0)) high.emplace_back(id_of(x) | LONG, u64{1} << 32);
  }
  // Per id: count and documents, 64-bit.
  void totals(std::vector<i64>& counts, std::vector<i64>& docs) const {
    counts.resize(size());
    docs.resize(size());
    for (u32 id = 0; id < size(); ++id) {
      counts[id] = of(id).count;
      docs[id] = of(id).docs;
    }
    for (const auto& e : high) (e.first & LONG ? docs[e.first & ~LONG] : counts[e.first]) += static_cast<i64>(e.second);
  }
};

// One thread's share of a fit: a contiguous range of texts.
struct Part {
  WordTable words;
  Buf<i32> ids;  // per token, the id in `words` (kept only when asked for)
  i64 ntok = 0;
  bool surrogate = false;
};

void fit_part(const Text* texts, i64 b0, i64 b1, const Rules& R, const LowerTable& L, bool keep_ids, i64* lens,
              Part& P) {
  Scratch S;
  WordTable& W = P.words;
  if (keep_ids) {  // about 5.5 characters a token in English: rarely grown
    i64 chars = 0;
    for (i64 b = b0; b < b1; ++b) chars += texts[b].len;
    P.ids.reserve(static_cast<std::size_t>(chars / 4 + 64));
  }
  for (i64 b = b0; b < b1; ++b) {
    tokenize(texts[b], R, L, S);
    const i64 nt = S.nt;
    const Scratch::Tok* tk = S.toks.p;
    i32* ids = nullptr;
    if (keep_ids) {
      P.ids.reserve(static_cast<std::size_t>(P.ntok + nt), static_cast<std::size_t>(P.ntok));
      ids = P.ids.p + P.ntok;
    }
    const u32 tb = static_cast<u32>(b - b0 + 1);
    for (i64 j = 0; j < nt; ++j) {
      if (j + 12 < nt) W.prefetch(tk[j + 12].hash);  // table memory a few tokens ahead
      WordTable::Slot& x = W.get_or_add(S.lo.p + tk[j].start, tk[j].len, tk[j].key, tk[j].hash);
      W.count(x, tb);
      if (ids) ids[j] = static_cast<i32>(WordTable::id_of(x));
    }
    lens[b] = nt;
    P.ntok += nt;
  }
  P.surrogate = S.surrogate;
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
  for (int c = 0; c < 128; ++c) R.map8[c] = R.amap[c] < 0 ? SEP : static_cast<unsigned char>(R.amap[c]);
  R.space_sep = R.amap[' '] < 0;
  R.lower = lower;
  R.avx2 = active_isa() != Isa::scalar;
  for (int l = 0; l < 16; ++l) {
    R.sep_nibble[l] = 0;
    for (int h = 0; h < 8; ++h)
      if (split_filters.find(static_cast<char32_t>(16 * h + l)) != std::u32string::npos) R.sep_nibble[l] |= 1 << h;
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

// Multithreaded region bodies must not throw: the first exception is recorded and rethrown.
struct Failure {
  std::mutex m;
  std::exception_ptr first;
  template <class F>
  void run(F&& f) {
    try {
      f();
    } catch (...) {
      std::lock_guard<std::mutex> lock(m);
      if (!first) first = std::current_exception();
    }
  }
  void check() {
    if (first) std::rethrow_exception(first);
  }
};

// Word ids by descending count, ties by id (Keras' stable sort of the first-seen order):
// counts below 2**16 (nearly all words) by a counting sort, the others sorted first.
std::vector<i64> count_order(const std::vector<i64>& counts) {
  constexpr i64 SMALL = i64{1} << 16;
  const i64 V = static_cast<i64>(counts.size());
  std::vector<i64> order;
  order.reserve(V);
  for (i64 g = 0; g < V; ++g)
    if (counts[g] >= SMALL) order.push_back(g);
  std::stable_sort(order.begin(), order.end(), [&](i64 a, i64 b) { return counts[a] > counts[b]; });
  std::vector<i64> pos(SMALL + 1, 0);  // then: where the next word of count c goes
  for (i64 g = 0; g < V; ++g)
    if (counts[g] < SMALL) ++pos[counts[g]];
  i64 at = static_cast<i64>(order.size());
  for (i64 c = SMALL - 1; c >= 0; --c) {
    const i64 n = pos[c];
    pos[c] = at;
    at += n;
  }
  order.resize(V);
  for (i64 g = 0; g < V; ++g)
    if (counts[g] < SMALL) order[pos[counts[g]]++] = g;
  return order;
}

py::object tokenizer_fit(py::object texts_obj, bool lower, bool strip_html, py::str split, py::str filters,
                         bool lower_unicode, bool keep_ids, i64 parallel_min_chars, i64 keep_max_chars) {
  // A tuple holds a reference to every text while the GIL is released.
  py::tuple texts = py::reinterpret_steal<py::tuple>(PySequence_Tuple(texts_obj.ptr()));
  if (!texts) throw py::error_already_set();
  const i64 B = static_cast<i64>(texts.size());
  // A word table keeps "the last text that counted the word" as a 32-bit index in its part.
  if (B >= static_cast<i64>(UINT32_MAX)) throw std::length_error("tokenizer_fit: more than 2**32 - 2 texts in one call");
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
  i64 ntok = 0;
  std::vector<i64> counts, docs;
  std::vector<u32> appended;  // the last part's words after part 0's table's: their ids there
  std::vector<std::unique_ptr<Part>> parts;
  bool surrogate = false;
  {
    py::gil_scoped_release nogil;
    i64 chars = 0;
    for (const Text& t : refs) chars += t.len;
    keep_ids = keep_ids && (keep_max_chars < 0 || chars <= keep_max_chars);
    // Small inputs on one thread (a parallel region costs more than they do).  Otherwise one
    // range per thread: each more range is one more table to build and merge (measured on
    // IMDB with 2 threads on a shared machine: 2 ranges beat 4 taken dynamically).
    const int nthreads = chars < parallel_min_chars ? 1 : std::max(1, get_num_threads());
    const int nparts = nthreads;
    const std::vector<i64> bounds = split_ranges(refs, nparts);
    for (int p = 0; p < nparts; ++p) parts.emplace_back(new Part());
    Failure fail;
    i64* lens = offsets.data() + 1;
#pragma omp parallel for schedule(static, 1) num_threads(nthreads) if (nthreads > 1)
    for (int p = 0; p < nparts; ++p)
      fail.run([&] { fit_part(refs.data(), bounds[p], bounds[p + 1], R, L, keep_ids, lens, *parts[p]); });
    fail.check();

    // Merge in range order: part 0's table is the start, later parts append their new words
    // in their own first-seen order.  First every thread looks words up in part 0's table
    // (read-only); then the words it lacks are added, in order.
    std::vector<std::vector<i32>> remap(nparts);
    WordTable& G = parts[0]->words;
    G.totals(counts, docs);
    std::vector<std::vector<u64>> keys(nparts);  // per word of part p: its key words
    for (int p = 1; p < nparts; ++p) {
      WordTable& W = parts[p]->words;
      const i64 nw = W.size();
      remap[p].resize(nw);
      keys[p].resize(static_cast<std::size_t>(nw) * KEYW);
      i32* r = remap[p].data();
      u64* kk = keys[p].data();
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && nw > 4096)
      for (i64 l = 0; l < nw; ++l) {
        if (l + 16 < nw) G.prefetch(W.hash[l + 16]);  // G is large: its slots a few words ahead
        const unsigned char* w = W.bytes.data() + W.start[l];
        const u32 n = W.len[l];
        for (u32 k = 0; k < KEYW; ++k) kk[l * KEYW + k] = key_word_stored(w, n, k);
        const WordTable::Slot& sl = G.slots[G.find(w, n, kk + l * KEYW, W.hash[l])];
        r[l] = sl.id1 ? static_cast<i32>(WordTable::id_of(sl)) : -1;
      }
    }
    // A part's new words go into part 0's table when a later part may have them too; the
    // last part's are only appended (ids counts.size()..., their bytes left in their part).
    std::vector<i64> pc, pd;
    for (int p = 1; p < nparts; ++p) {
      WordTable& W = parts[p]->words;
      W.totals(pc, pd);
      i32* r = remap[p].data();
      const bool last = p == nparts - 1;
      if (!last) {
        std::size_t more = 0;
        for (u32 l = 0; l < W.size(); ++l) more += r[l] < 0;
        G.reserve_more(more);
      }
      for (u32 l = 0; l < W.size(); ++l) {
        if (r[l] < 0) {  // absent from part 0's table; maybe added by an earlier part
          const u64* key = keys[p].data() + std::size_t{l} * KEYW;
          std::size_t k = 0;
          if (last && p > 1) k = G.find(W.bytes.data() + W.start[l], W.len[l], key, W.hash[l]);
          if (last && p > 1 && G.slots[k].id1) {
            r[l] = static_cast<i32>(WordTable::id_of(G.slots[k]));
          } else if (last) {
            r[l] = static_cast<i32>(counts.size());
            appended.push_back(l);
          } else {
            r[l] = static_cast<i32>(WordTable::id_of(G.get_or_add(W.bytes.data() + W.start[l], W.len[l], key, W.hash[l])));
          }
        }
        const u32 g = static_cast<u32>(r[l]);
        if (g == counts.size()) {
          counts.push_back(0);
          docs.push_back(0);
        }
        counts[g] += pc[l];
        docs[g] += pd[l];
      }
    }
    std::vector<i64> tok0(nparts + 1, 0);
    for (int p = 0; p < nparts; ++p) {
      tok0[p + 1] = tok0[p] + parts[p]->ntok;
      surrogate |= parts[p]->surrogate;
    }
    for (i64 b = 0; b < B; ++b) offsets[b + 1] += offsets[b];
    if (keep_ids) {
      // Part 0's ids, grown in place, take the others' after them (mapped to merged ids).
      Buf<i32>& prov = parts[0]->ids;
      prov.reserve(static_cast<std::size_t>(tok0[nparts]), static_cast<std::size_t>(tok0[1]));
      for (int p = 1; p < nparts; ++p) {
        const i32* ids = parts[p]->ids.p;
        const i32* map = remap[p].data();
        i32* out = prov.p + tok0[p];
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
        for (i64 k = 0; k < parts[p]->ntok; ++k) out[k] = map[ids[k]];
      }
      ntok = tok0[nparts];
    }
  }
  WordTable& G = parts[0]->words;
  const u32 V = static_cast<u32>(counts.size());
  if (counts.size() > static_cast<std::size_t>(INT32_MAX)) throw std::length_error("tokenizer_fit: more than 2**31 distinct words");
  py::list words(V);
  std::vector<u64> whash(V);
  for (u32 g = 0; g < V; ++g) {
    const WordTable& T = g < G.size() ? G : parts.back()->words;
    const u32 l = g < G.size() ? g : appended[g - G.size()];
    const char* b = reinterpret_cast<const char*>(T.bytes.data() + T.start[l]);
    const u32 n = T.len[l];
    // surrogatepass: a lone surrogate in a text comes back as itself, as Python's split keeps it.
    PyObject* w = PyUnicode_DecodeUTF8(b, n, "surrogatepass");
    if (!w) throw py::error_already_set();
    PyList_SET_ITEM(words.ptr(), g, w);
    u32 h = FNV_OFFSET;  // the n-gram hash of a word: 32-bit FNV-1a of its UTF-8 bytes
    for (u32 k = 0; k < n; ++k) h = (h ^ static_cast<unsigned char>(b[k])) * FNV_PRIME;
    whash[g] = h;
  }
  py::object prov_out = keep_ids ? py::object(buf_to_numpy(parts[0]->ids, static_cast<std::size_t>(ntok)))
                                 : py::object(py::none());
  {
    py::gil_scoped_release nogil;  // unmapping the tables takes a moment
    parts.clear();
  }
  std::vector<i64> order;
  {
    py::gil_scoped_release nogil;
    order = count_order(counts);
  }
  return py::make_tuple(words, to_numpy(std::move(counts)), to_numpy(std::move(docs)), to_numpy(std::move(whash)),
                        prov_out, to_numpy(std::move(offsets)), surrogate, to_numpy(std::move(order)));
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
  bool pow2;  // buckets is a power of two: h % buckets is a mask
  i64 vocab;
  bool drops;  // some final id is < 0

  FS_INLINE i64 count(i64 b) const {
    const i64 len = off[b + 1] - off[b];
    i64 c = len;
    if (drops) {
      c = 0;
      for (i64 j = off[b]; j < off[b + 1]; ++j) c += fin[prov[j]] >= 0;
    }
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
          put(vocab + static_cast<i64>(pow2 ? h & (buckets - 1) : h % buckets));
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

#ifndef Py_GIL_DISABLED
// Lists of ints made fast.  Every int object is shared by all the slots holding its value;
// the lists' item slots are filled by all threads (plain pointer stores with the GIL held:
// no Python code runs, and the lists are reachable from nowhere yet), each thread counting
// the references it stored; each int's reference count is then raised by its total, once.

// B empty lists with room for out_off[b+1] - out_off[b] items each (allocated as PyList_New
// would, not zero-filled); their size stays 0 until set_sizes, so that a failure before
// frees them without reading a slot.
py::list new_lists(i64 B, const std::vector<i64>& out_off, std::vector<PyObject**>& items) {
  py::list out(B);
  items.resize(static_cast<std::size_t>(B));
  for (i64 b = 0; b < B; ++b) {
    const i64 n = out_off[b + 1] - out_off[b];
    PyObject* l = PyList_New(0);
    if (!l) throw py::error_already_set();
    PyList_SET_ITEM(out.ptr(), b, l);
    if (n) {
      PyObject** it = static_cast<PyObject**>(PyMem_Malloc(static_cast<std::size_t>(n) * sizeof(PyObject*)));
      if (!it) throw std::bad_alloc();
      auto* lo = reinterpret_cast<PyListObject*>(l);
      lo->ob_item = it;
      lo->allocated = n;
    }
    items[b] = reinterpret_cast<PyListObject*>(l)->ob_item;
  }
  return out;
}
void set_sizes(py::list& out, i64 B, const std::vector<i64>& out_off) {
  for (i64 b = 0; b < B; ++b) Py_SET_SIZE(PyList_GET_ITEM(out.ptr(), b), out_off[b + 1] - out_off[b]);
}
// References held while lists are made, released however that ends.
struct Refs {
  std::vector<PyObject*> o;
  explicit Refs(std::size_t n) : o(n, nullptr) {}
  ~Refs() {
    for (PyObject* x : o) Py_XDECREF(x);
  }
};

// Texts without n-grams: one int per word (its final id's), counted per word.
py::list word_lists(const Encoding& E, i64 B, i64 V, const std::vector<i64>& out_off, i64 hi) {
  IntCache ints(std::min<i64>(hi + 1, i64{1} << 24));
  Refs obj(static_cast<std::size_t>(V));  // per word: its id's int
  for (i64 v = 0; v < V; ++v)
    if (E.fin[v] >= 0) obj.o[v] = ints.get(E.fin[v]);
  const int nt = B > 256 ? std::max(1, get_num_threads()) : 1;
  // Allocated before any item is stored: a failure leaves only empty lists to free.
  std::vector<std::vector<i64>> uses(nt, std::vector<i64>(static_cast<std::size_t>(V), 0));
  GcPause pause;
  std::vector<PyObject**> items;
  py::list out = new_lists(B, out_off, items);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    i64* u = uses[omp_get_thread_num()].data();
#pragma omp for schedule(dynamic, 256)
    for (i64 b = 0; b < B; ++b) {
      PyObject** it = items[b];
      for (i64 j = E.off[b]; j < E.off[b + 1]; ++j) {
        const i32 w = E.prov[j];
        if (obj.o[w]) {
          *it++ = obj.o[w];
          ++u[w];
        }
      }
    }
  }
  for (i64 w = 0; w < V; ++w) {
    i64 c = 0;
    for (int t = 0; t < nt; ++t) c += uses[t][w];
    if (c) Py_SET_REFCNT(obj.o[w], Py_REFCNT(obj.o[w]) + c);
  }
  set_sizes(out, B, out_off);
  return out;
}

// Any ids in [0, K): all ids computed first (all threads, with per-thread counts per id),
// then one int per id that occurs.
py::list id_lists(const Encoding& E, i64 B, const std::vector<i64>& out_off, i64 K) {
  const i64 N = out_off[B];
  const int nt = B > 256 ? std::max(1, get_num_threads()) : 1;
  Buf<i32> flat;
  flat.reserve(static_cast<std::size_t>(std::max<i64>(N, 1)));
  std::vector<u32*> uses(nt);
  struct Free {
    std::vector<u32*>& u;
    std::size_t bytes;
    ~Free() {
      for (u32* x : u) mem::release(x, bytes);
    }
  } free_uses{uses, static_cast<std::size_t>(K) * sizeof(u32)};
  for (int t = 0; t < nt; ++t) uses[t] = static_cast<u32*>(mem::alloc(static_cast<std::size_t>(K) * sizeof(u32), true));
  {
    py::gil_scoped_release nogil;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
      u32* u = uses[omp_get_thread_num()];
#pragma omp for schedule(dynamic, 256)
      for (i64 b = 0; b < B; ++b) {
        i32* q = flat.p + out_off[b];
        E.emit(b, [&](i64 v) {
          *q++ = static_cast<i32>(v);
          ++u[v];
        });
      }
#pragma omp for schedule(static)
      for (i64 v = 0; v < K; ++v)
        for (int t = 1; t < nt; ++t) uses[0][v] += uses[t][v];
    }
  }
  const u32* total = uses[0];
  GcPause pause;
  std::vector<PyObject**> items;
  py::list out = new_lists(B, out_off, items);
  // One int per id that occurs, made with its final reference count (the lists' slots own
  // them all); a failure takes back those made so far.
  std::vector<PyObject*> obj(static_cast<std::size_t>(K), nullptr);
  for (i64 v = 0; v < K; ++v) {
    if (!total[v]) continue;
    PyObject* o = PyLong_FromLongLong(v);
    if (!o) {
      for (i64 w = 0; w < v; ++w)
        if (obj[w]) {
          Py_SET_REFCNT(obj[w], Py_REFCNT(obj[w]) - static_cast<Py_ssize_t>(total[w]) + 1);
          Py_DECREF(obj[w]);
        }
      throw py::error_already_set();
    }
    Py_SET_REFCNT(o, Py_REFCNT(o) + static_cast<Py_ssize_t>(total[v]) - 1);
    obj[v] = o;
  }
  PyObject* const* ob = obj.data();
#pragma omp parallel for schedule(dynamic, 256) num_threads(nt) if (nt > 1)
  for (i64 b = 0; b < B; ++b) {
    PyObject** it = items[b];
    for (i64 j = out_off[b]; j < out_off[b + 1]; ++j) *it++ = ob[flat.p[j]];
  }
  set_sizes(out, B, out_off);
  return out;
}
#endif

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
    E.pow2 = (E.buckets & (E.buckets - 1)) == 0;
  }
  std::vector<i64> out_off(B + 1, 0);
  i64 hi = -1;
  {
    py::gil_scoped_release nogil;
    bool bad = first_bad_offset(E.off, B + 1, N) >= 0 || first_bad_id(E.prov, N, V) >= 0;
    if (!bad) {
      E.drops = false;
      for (i64 v = 0; v < V; ++v) {
        hi = std::max(hi, E.fin[v]);
        E.drops |= E.fin[v] < 0;
      }
#pragma omp parallel for schedule(dynamic, 256) num_threads(get_num_threads()) if (B > 256 && E.drops)
      for (i64 b = 0; b < B; ++b) out_off[b + 1] = E.count(b);
      for (i64 b = 0; b < B; ++b) out_off[b + 1] += out_off[b];
    }
    if (bad) {
      py::gil_scoped_acquire gil;
      shape_error(OP, "prov / offsets out of range");
    }
  }
#ifndef Py_GIL_DISABLED
  if (as_lists && ngrams == 1) return word_lists(E, B, V, out_off, hi);
  // N-gram ids: shared ints when their count table is small (the default 2**20 buckets: 4 MB).
  const i64 K = std::max<i64>(hi + 1, ngrams > 1 ? vocab + buckets : 0);
  if (as_lists && K <= (i64{1} << 24) && out_off[B] < static_cast<i64>(UINT32_MAX)) return id_lists(E, B, out_off, K);
#endif
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

// ---------------------------------------------------------------- lookup
// Encoding new texts against a fitted vocabulary kept as arrays: each new word's position
// among the fitted words, without building Keras' word_index dict (building it and looking
// 87,000 test words up in it take ~35 ms for IMDB, mostly cache misses on the str objects;
// this touches each object once).  Two str are equal iff they have the same kind, length
// and bytes (CPython's compact strings use the narrowest kind for their code points).
py::array_t<i64> tokenizer_lookup(py::list vocab, py::list words) {
  static const char* OP = "tokenizer_lookup";
  const i64 V = static_cast<i64>(vocab.size()), N = static_cast<i64>(words.size());
  struct Key {
    const void* data;
    i64 len;
    int kind;
    Py_hash_t hash;
  };
  auto key = [&](PyObject* o, const char* name) {
    if (!PyUnicode_Check(o)) throw py::type_error(std::string(OP) + ": argument '" + name + "' must hold only str");
    if (PyUnicode_READY(o) < 0) throw py::error_already_set();
    const Py_hash_t h = PyObject_Hash(o);  // cached in the str object
    if (h == -1) throw py::error_already_set();
    return Key{PyUnicode_DATA(o), static_cast<i64>(PyUnicode_GET_LENGTH(o)), static_cast<int>(PyUnicode_KIND(o)), h};
  };
  std::vector<Key> keys(static_cast<std::size_t>(V));
  for (i64 i = 0; i < V; ++i) keys[i] = key(PyList_GET_ITEM(vocab.ptr(), i), "vocab");
  std::size_t cap = 16;
  while (cap < 2 * static_cast<std::size_t>(V)) cap *= 2;
  const std::size_t mask = cap - 1;
  std::vector<i64> slot(cap, -1);  // position in vocab, -1: empty
  auto same = [](const Key& a, const Key& b) {
    return a.hash == b.hash && a.len == b.len && a.kind == b.kind &&
           std::memcmp(a.data, b.data, static_cast<std::size_t>(a.len) * a.kind) == 0;
  };
  for (i64 i = 0; i < V; ++i) {
    std::size_t k = static_cast<std::size_t>(keys[i].hash) & mask;
    while (slot[k] >= 0 && !same(keys[slot[k]], keys[i])) k = (k + 1) & mask;
    if (slot[k] < 0) slot[k] = i;  // a repeated word keeps its first position
  }
  py::array_t<i64> out(N);
  i64* o = out.mutable_data();
  for (i64 j = 0; j < N; ++j) {
    const Key w = key(PyList_GET_ITEM(words.ptr(), j), "words");
    std::size_t k = static_cast<std::size_t>(w.hash) & mask;
    while (slot[k] >= 0 && !same(keys[slot[k]], w)) k = (k + 1) & mask;
    o[j] = slot[k];
  }
  return out;
}

// ---------------------------------------------------------------- vocabulary JSON
// Tokenizer.get_config() stores each vocabulary dict as json.dumps(dict) (default options:
// ensure_ascii, ", " and ": "); save_model stores that config inside to_json() inside the
// header, escaping it twice more.  Python's json takes ~50 ms per dict of IMDB's 88,000 words
// and ~40 ms per extra escaping of the 8 MB result; this writes the text of any escaping
// depth in one pass, from the fit's arrays (no dict is built).

// A JSON text of printable ASCII written as the body of a JSON string `depth` times over:
// each level doubles every backslash and puts one before every quote.
struct JsonOut {
  char* s = nullptr;  // s[0:n] is written; grown (not zero-filled) before each item: room()
  std::size_t n = 0, cap = 0;
  std::size_t bs;  // backslashes a depth-0 '\' becomes: 2**depth (a '"' gets one fewer)
  explicit JsonOut(int depth) : bs(std::size_t{1} << depth) {}
  ~JsonOut() { std::free(s); }
  JsonOut(const JsonOut&) = delete;
  JsonOut& operator=(const JsonOut&) = delete;
  // Room for `bytes` more bytes of depth-0 text at this depth (each may become bs bytes).
  void room(std::size_t bytes) {
    const std::size_t want = n + bytes * bs;
    if (want <= cap) return;
    const std::size_t c = std::max(want, 2 * cap);
    char* p = static_cast<char*>(std::realloc(s, c));
    if (!p) throw std::bad_alloc();
    s = p;
    cap = c;
  }
  FS_INLINE void put(char c) { s[n++] = c; }
  FS_INLINE void put(const char* p, std::size_t k) {
    std::memcpy(s + n, p, k);
    n += k;
  }
  FS_INLINE void raw(char c) {
    if (c == '\\' || c == '"') {
      std::memset(s + n, '\\', bs - (c == '"'));
      n += bs - (c == '"');
      if (c == '"') s[n++] = '"';
    } else {
      s[n++] = c;
    }
  }
  void integer(i64 v, bool quoted) {
    char buf[24];
    char* e = buf + sizeof buf;
    char* q = e;
    u64 m = v < 0 ? u64{0} - static_cast<u64>(v) : static_cast<u64>(v);
    do {
      *--q = static_cast<char>('0' + m % 10);
      m /= 10;
    } while (m);
    if (v < 0) *--q = '-';
    if (quoted) raw('"');
    put(q, static_cast<std::size_t>(e - q));  // digits and '-': nothing to escape
    if (quoted) raw('"');
  }
  // json's encode_basestring_ascii (Modules/_json.c): printable ASCII but '\' and '"' as is,
  // short escapes for \b \f \n \r \t, other code points as \uXXXX (lower-case hex), those
  // above U+FFFF as a surrogate pair; a lone surrogate is written as its own \uXXXX.
  // Needs room(12 * length + 2).
  void string(PyObject* o) {
    const Py_ssize_t len = PyUnicode_GET_LENGTH(o);
    const int kind = PyUnicode_KIND(o);
    const void* d = PyUnicode_DATA(o);
    raw('"');
    Py_ssize_t i = 0;
    if (kind == PyUnicode_1BYTE_KIND) {  // the common case: a run of plain characters, copied at once
      const unsigned char* c = static_cast<const unsigned char*>(d);
      while (i < len && c[i] >= ' ' && c[i] <= '~' && c[i] != '\\' && c[i] != '"') ++i;
      put(reinterpret_cast<const char*>(c), static_cast<std::size_t>(i));
    }
    for (; i < len; ++i) {
      const u32 c = PyUnicode_READ(kind, d, i);
      if (c >= ' ' && c <= '~' && c != '\\' && c != '"') {
        put(static_cast<char>(c));
        continue;
      }
      raw('\\');
      switch (c) {
        case '\\': raw('\\'); break;
        case '"': raw('"'); break;
        case '\b': put('b'); break;
        case '\f': put('f'); break;
        case '\n': put('n'); break;
        case '\r': put('r'); break;
        case '\t': put('t'); break;
        default:
          if (c >= 0x10000) {
            const u32 v = c - 0x10000;
            hex4(0xD800 | (v >> 10));
            raw('\\');
            hex4(0xDC00 | (v & 0x3FF));
          } else {
            hex4(c);
          }
      }
    }
    raw('"');
  }
  void hex4(u32 c) {
    static const char* HEX = "0123456789abcdef";
    const char u[5] = {'u', HEX[(c >> 12) & 0xF], HEX[(c >> 8) & 0xF], HEX[(c >> 4) & 0xF], HEX[c & 0xF]};
    put(u, 5);
  }
};

// One side of the dict: a list of str, or int64 ids.
struct JsonColumn {
  PyObject* list = nullptr;
  const i64* ints = nullptr;
  i64 n = 0;
  JsonColumn(const py::object& o, const char* name) {
    static const char* OP = "tokenizer_json_object";
    if (PyList_CheckExact(o.ptr())) {
      list = o.ptr();
      n = PyList_GET_SIZE(list);
      for (i64 i = 0; i < n; ++i) {
        PyObject* w = PyList_GET_ITEM(list, i);
        if (!PyUnicode_Check(w)) throw py::type_error(std::string(OP) + ": argument '" + name + "' must hold only str");
        if (PyUnicode_READY(w) < 0) throw py::error_already_set();
      }
    } else {
      py::array a = py::reinterpret_borrow<py::array>(o);
      if (!py::isinstance<py::array>(o) || a.ndim() != 1)
        throw py::type_error(std::string(OP) + ": argument '" + name + "' must be a list of str or a 1-D int64 array");
      ints = cptr<i64>(a, Dt::i64, OP, name);
      n = static_cast<i64>(a.size());
    }
  }
  // Depth-0 bytes item i can take at most.
  std::size_t most(i64 i) const {
    return list ? 12 * static_cast<std::size_t>(PyUnicode_GET_LENGTH(PyList_GET_ITEM(list, i))) + 2 : 22;
  }
  void put(JsonOut& out, i64 i, bool key) const {
    if (list) out.string(PyList_GET_ITEM(list, i));
    else out.integer(ints[i], key);  // JSON object keys are strings: json.dumps writes "3"
  }
};

// json.dumps(dict(zip(keys, values))) for distinct keys, escaped `depth` times (see JsonOut).
py::str tokenizer_json_object(py::object keys, py::object values, int depth) {
  static const char* OP = "tokenizer_json_object";
  if (depth < 0 || depth > 8) shape_error(OP, "depth must be in [0, 8]");
  const JsonColumn K(keys, "keys"), V(values, "values");
  if (K.n != V.n) shape_error(OP, "keys and values must have the same length");
  JsonOut out(depth);
  out.room(static_cast<std::size_t>(K.n) * 16 + 2);
  out.put('{');
  for (i64 i = 0; i < K.n; ++i) {
    out.room(K.most(i) + V.most(i) + 4);
    if (i) out.put(", ", 2);
    K.put(out, i, true);
    out.put(": ", 2);
    V.put(out, i, false);
  }
  out.room(1);
  out.put('}');
  // Printable ASCII only: a compact ASCII str, filled by one copy.
  PyObject* r = PyUnicode_New(static_cast<Py_ssize_t>(out.n), 127);
  if (!r) throw py::error_already_set();
  std::memcpy(PyUnicode_DATA(r), out.s, out.n);
  return py::reinterpret_steal<py::str>(r);
}

}  // namespace

void bind_tokenizer(py::module_& m) {
  m.def("tokenizer_unidata_version", []() { return std::string(tu::kUnidataVersion); },
        "the Unicode version of the lower-casing tables compiled in");
  m.def("tokenizer_fit", &tokenizer_fit, py::arg("texts"), py::arg("lower"), py::arg("strip_html"), py::arg("split"),
        py::arg("filters"), py::arg("lower_unicode"), py::arg("keep_ids"), py::arg("parallel_min_chars") = 1 << 16,
        py::arg("keep_max_chars") = -1,
        "Tokenize a sequence of str (None if one is not an exact str): (words in first-seen order, counts int64, "
        "docs int64, word FNV-1a hashes uint64, per-token word ids int32 or None (None too when the texts have "
        "more than keep_max_chars >= 0 characters), token offsets int64 (B+1,), whether a lone surrogate was "
        "seen, word ids by descending count with ties in first-seen order int64)");
  m.def("tokenizer_lookup", &tokenizer_lookup, py::arg("vocab"), py::arg("words"),
        "int64 position of each of words (list of str) in vocab (list of distinct str), -1 where absent");
  m.def("tokenizer_json_object", &tokenizer_json_object, py::arg("keys"), py::arg("values"), py::arg("depth") = 0,
        "json.dumps(dict(zip(keys, values))) (distinct keys; each side a list of str or a 1-D int64 array), "
        "escaped depth times as the body of a JSON string");
  m.def("tokenizer_encode", &tokenizer_encode, py::arg("prov"), py::arg("offsets"), py::arg("final"),
        py::arg("word_hash"), py::arg("ngrams"), py::arg("buckets"), py::arg("vocab_size"), py::arg("int32"),
        py::arg("as_lists"),
        "per text the final ids of its words (final < 0 drops one), then its n-gram ids: a list of lists of "
        "int (as_lists), else (ids int32 / int64, offsets int64 (B+1,))");
}

}  // namespace fastscale
