"""Text to ids: a Keras-compatible ``Tokenizer``, ``pad_sequences``, and bag encoding.

Pure Python + NumPy (the tokenizer needs no kernel).  ``Tokenizer`` follows Keras'
``keras.preprocessing.text.Tokenizer`` exactly (same ``word_counts``, ``word_docs``,
``document_count``, ``index_docs``, ``word_index``, same ids, same JSON layout), with three
fastscale options; of them only ``strip_html`` (on by default) changes a Keras port's ids:

* ``strip_html=True`` (default): before anything else, every HTML line break ``<br>``,
  ``<br/>``, ``<br />`` (``"<br"`` case-insensitive, then any number of ASCII spaces, an
  optional ``/``, ``">"``) is replaced by one space, so IMDB's ``<br /><br />`` does not
  become the token ``"br"``.  Set it to False for Keras' exact ids.
* ``ngrams=n`` (default 1): the fastText trick.  ``texts_to_sequences`` appends, after a
  text's word ids, one id per word n-gram of length 2..n, ``vocab_size + ngram_hash(g) %
  buckets`` (see ``ngram_hash``), ordered as fastText does: by start position, then by length.
* ``buckets`` (default 2**20): the size of the n-gram hash table.

Engines.  ``Tokenizer(engine="auto")`` (the default) fits and encodes ``str`` texts with the
C++ tokenizer of ``fastscale._cpu`` when that extension is importable (multithreaded, the
GIL released; ``fit_on_texts`` + ``texts_to_sequences`` of the 25,000 IMDB training reviews
about 15x faster on one thread, up to 20x on two: benchmarks/bench_tokenizer.py), and with
the pure-Python code below otherwise.
Both give exactly the same ``word_counts``, ``word_docs``, ``document_count``,
``index_docs``, ``word_index`` and ids (tests/test_tokenizer_cpp.py compares them on random
Unicode text).  ``engine="python"`` forces the pure-Python code (the reference);
``engine="cpp"`` demands the extension (``BackendUnavailableError`` without it).  Whatever
the engine, the Python code handles what the C++ one does not: ``char_level=True``, a
``split`` longer than one character, non-``str`` filters, and texts that are token lists
or ``str`` subclasses.  Any other iterable of texts than a list or tuple is read into a
list by the C++ path when encoding, and fitted in batches of 8192 texts.

Tokenizing rules (the contract a C++ tokenizer reproduces): for a ``str`` text, (1) strip
HTML line breaks if ``strip_html``, (2) ``str.lower()`` if ``lower``, (3) word level: every
character of ``filters`` becomes ``split``, then ``text.split(split)``, empty strings dropped;
char level: the characters themselves (``filters`` are not applied, as in Keras).  A text that
is a ``list`` is taken as its tokens (lower-cased if ``lower``), as in Keras.
"""
from __future__ import annotations

import functools
import json
import operator
import re
from collections import OrderedDict, defaultdict
from itertools import chain, islice, repeat

import numpy as np

__all__ = [
    "Tokenizer",
    "fnv1a_32",
    "ngram_hash",
    "pad_sequences",
    "sequences_to_bags",
    "text_to_word_sequence",
    "tokenizer_from_json",
]

DEFAULT_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'

# One regex pass over the whole text (not per word); guarded by a cheap `"<" in text`.
_BR = re.compile(r"<[bB][rR] */?>")

# Characters that str.split() (no argument) treats as separators.  When a translated text
# contains none of them except " ", text.split() equals [w for w in text.split(" ") if w] and
# is about twice as fast; otherwise Keras' exact split(" ") is used.
_OTHER_WS = (  # == "".join(c for c in map(chr, range(0x110000)) if c.isspace() and c != " ")
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

_FNV_OFFSET = 2166136261
_FNV_PRIME = 16777619
_NGRAM_MULT = 116049371  # fastText's n-gram combining multiplier
_U64 = (1 << 64) - 1


def fnv1a_32(token: str) -> int:
    """32-bit FNV-1a of the token's UTF-8 bytes (unsigned, in ``[0, 2**32)``).

    ``h = 2166136261; for each byte b: h = ((h ^ b) * 16777619) mod 2**32``.
    (fastText sign-extends each byte first; that differs for non-ASCII bytes.  This is the
    standard FNV-1a.)
    """
    h = _FNV_OFFSET
    for b in token.encode("utf-8"):
        h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def ngram_hash(tokens) -> int:
    """Hash of a word n-gram from its token strings, in ``[0, 2**64)``.

    ``h = fnv1a_32(t[0]); for each next token t: h = (h * 116049371 + fnv1a_32(t)) mod 2**64``,
    all unsigned (fastText combines the same way but sign-extends the 32-bit token hashes).
    The n-gram's id is ``vocab_size + ngram_hash(tokens) % buckets``.
    """
    it = iter(tokens)
    h = fnv1a_32(next(it))
    for t in it:
        h = (h * _NGRAM_MULT + fnv1a_32(t)) & _U64
    return h


class _HashCache(dict):
    """token -> fnv1a_32(token), computed once per distinct token."""

    __slots__ = ()

    def __missing__(self, token):
        if len(self) > 4_000_000:  # bound the memory an endless stream of new tokens can take
            self.clear()
        h = self[token] = fnv1a_32(token)
        return h


class _OOVLookup(dict):
    """word -> id; an unknown word gives the OOV id without being inserted."""

    __slots__ = ("oov",)

    def __missing__(self, word):
        return self.oov


class _Enumerator(dict):
    """key -> 0, 1, 2, ... in first-seen order (the id is assigned on the first lookup)."""

    __slots__ = ()

    def __missing__(self, key):
        v = self[key] = len(self)
        return v


_FIT_CACHE_TOKENS = 1 << 26  # at most 256 MB of cached provisional ids
_COUNT_CHUNK = 1 << 22
_FIT_BATCH = 8192  # texts per C++ call when fitting an iterator (not a list / tuple)
_INT32_MAX = 2**31 - 1
_CPP_PARALLEL_MIN_CHARS = 1 << 16  # smaller inputs are tokenized on one thread (tests lower it)
ENGINES = ("auto", "cpp", "python")

_CPP = None  # (fastscale._cpu or None, whether its Unicode tables match this interpreter's)


def _cpp_module():
    """``(module, unicode_ok)``: the C++ tokenizer if the extension has one, else ``(None, False)``.

    ``unicode_ok`` says its lower-casing tables (generated from ``str.lower`` of the Python
    that built it) are of this interpreter's Unicode version; if not, non-ASCII texts are
    lower-cased by ``str.lower`` before the C++ code sees them."""
    global _CPP
    if _CPP is None:
        import unicodedata

        from fastscale import _backends

        mod = _backends.module("cpp") if _backends.status("cpp") is None else None
        if mod is not None and not hasattr(mod, "tokenizer_fit"):
            mod = None  # an extension built before the tokenizer existed
        ok = mod is not None and mod.tokenizer_unidata_version() == unicodedata.unidata_version
        _CPP = (mod, ok)
    return _CPP


def _count(arrays, n_words):
    """Per provisional id: total count, and number of arrays (texts) containing it (lists)."""
    counts = np.zeros(n_words, dtype=np.int64)
    docs = np.zeros(n_words, dtype=np.int64)
    i = 0
    while i < len(arrays):
        # A chunk of whole texts (a text's ids are deduplicated within the text only).
        j, acc = i, 0
        while j < len(arrays) and (acc == 0 or acc + len(arrays[j]) <= _COUNT_CHUNK):
            acc += len(arrays[j])
            j += 1
        chunk = arrays[i:j]
        flat = np.concatenate(chunk).astype(np.int64)
        lens = np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk))
        counts += np.bincount(flat, minlength=n_words)
        # Unique (text, id) pairs: sort the keys text * n + id, keep the first of each run.
        keys = np.repeat(np.arange(len(chunk), dtype=np.int64), lens) * n_words + flat
        keys.sort()
        first = np.ones(len(keys), dtype=bool)
        np.not_equal(keys[1:], keys[:-1], out=first[1:])
        docs += np.bincount(keys[first] % max(n_words, 1), minlength=n_words)
        i = j
    return counts.tolist(), docs.tolist()


def text_to_word_sequence(text, filters=DEFAULT_FILTERS, lower=True, split=" "):
    """Keras' ``text_to_word_sequence``: lower, filters -> ``split``, split, drop empties."""
    if lower:
        text = text.lower()
    text = text.translate(str.maketrans({c: split for c in filters}))
    return [w for w in text.split(split) if w]


class _Pending:
    """The vocabulary of a first fit by the C++ tokenizer, as arrays: Keras' dicts
    (``word_counts``, ``word_docs``, ``word_index``, ``index_word``, ``index_docs``) are built
    from it only when first read, and ``texts_to_sequences`` / ``texts_to_bags`` of the fitted
    texts need none of them.  ``oov`` is the fit's ``oov_token``, never one of ``words``."""

    __slots__ = ("words", "counts", "docs", "oov", "_order")

    def __init__(self, words, counts, docs, oov, order=None):
        self.words, self.counts, self.docs, self.oov = words, counts, docs, oov
        self._order = order

    @property
    def n_index(self):
        """``len(word_index)``: the words, and the OOV token at 1 when set."""
        return len(self.words) + (self.oov is not None)

    def order(self):
        """Word positions by descending count, ties in first-seen order (Keras' stable sort)."""
        if self._order is None:
            self._order = np.argsort(-self.counts, kind="stable")
        return self._order

    def sorted_vocabulary(self):
        """``word_index``'s keys in id order."""
        head = [] if self.oov is None else [self.oov]
        return head + list(map(self.words.__getitem__, self.order().tolist()))

    def index_of_words(self):
        """``word_index[w]`` for each word in first-seen order (int64)."""
        ids = np.empty(len(self.words), dtype=np.int64)
        base = 1 if self.oov is None else 2
        ids[self.order()] = np.arange(base, base + len(self.words), dtype=np.int64)
        return ids


class _LazyVocabulary:
    """A Keras vocabulary attribute of ``Tokenizer``: an ordinary instance attribute (set,
    mutated and read as in Keras), except that a first fit by the C++ tokenizer leaves it
    out of the instance and this descriptor builds it from ``_pending`` on first read."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return obj._materialize(self.name)


_LAZY_ATTRS = {  # name -> Keras' empty value
    "word_counts": OrderedDict,
    "word_docs": lambda: defaultdict(int),
    "index_docs": lambda: defaultdict(int),
    "word_index": dict,
    "index_word": dict,
}


_MATRIX_MODES = ("binary", "count", "tfidf", "freq")


def _check_mode(op, mode):
    if not isinstance(mode, str) or mode not in _MATRIX_MODES:
        raise ValueError(f"Tokenizer.{op}: argument 'mode' must be one of {_MATRIX_MODES}, got {mode!r}")


def _check_texts(op, texts):
    """A lone ``str`` would be read as one text per character: refuse it."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"Tokenizer.{op}: argument 'texts' must be a list (or other iterable) of texts, "
                        f"got a {type(texts).__name__}; pass [text] for a single text")


def _bad_text(op, texts, err, start=0):
    """Re-raise ``err`` (from tokenizing ``texts``, items ``start``... of the caller's) naming
    the first item that is not a text."""
    if isinstance(texts, (list, tuple, np.ndarray)):
        for i, t in enumerate(texts, start):
            what = _not_a_text(t)
            if what:
                raise _not_a_text_error(op, i, what) from err
    raise err


def _not_a_text_error(op, i, what):
    return TypeError(f"Tokenizer.{op}: texts[{i}] must be a str or a list of str tokens, got {what}")


def _not_a_text(t):
    """'' for a text (a str, or a list of str tokens), else what ``t`` is instead."""
    if isinstance(t, str):
        return ""
    if isinstance(t, list):
        w = next((w for w in t if not isinstance(w, str)), None)
        return "" if w is None else f"a list holding {type(w).__name__}"
    return type(t).__name__


def _texts_method(f):
    """Public methods taking texts: a lone str is refused, a non-text item named."""
    op = f.__name__

    def wrapper(self, texts, *args, **kwargs):
        _check_texts(op, texts)
        try:
            return f(self, texts, *args, **kwargs)
        except (TypeError, AttributeError) as e:
            _bad_text(op, texts, e)

    return functools.wraps(f)(wrapper)


class Tokenizer:
    """Keras' ``Tokenizer`` with fastscale's ``strip_html``, ``ngrams`` and ``buckets``.

    Attributes as in Keras: ``word_counts`` (word -> count, first-seen order), ``word_docs``
    (word -> number of texts containing it), ``document_count``, ``word_index`` (word -> id,
    1-based, by descending count with ties in first-seen order, ``oov_token`` at 1),
    ``index_word`` and ``index_docs``.  ``texts_to_sequences`` keeps words whose id is
    ``< num_words``; the others (and unknown words) become the OOV id when ``oov_token`` is
    set and are dropped otherwise.  ``num_words`` only limits encoding, never fitting.
    A first fit by the C++ tokenizer keeps the vocabulary as arrays and builds each of these
    five dicts when it is first read (the same values, order and types); encoding the fitted
    texts needs none of them.

    ``engine``: ``"auto"`` (default: the C++ tokenizer when ``fastscale._cpu`` has it, else
    Python), ``"cpp"`` (demand it) or ``"python"`` (the pure-Python reference); see the
    module docstring.  Every engine gives identical attributes and ids.
    """

    word_counts = _LazyVocabulary()
    word_docs = _LazyVocabulary()
    index_docs = _LazyVocabulary()
    word_index = _LazyVocabulary()
    index_word = _LazyVocabulary()
    _pending = None  # (also for instances pickled before it existed)

    def __init__(
        self,
        num_words=None,
        filters=DEFAULT_FILTERS,
        lower=True,
        split=" ",
        char_level=False,
        oov_token=None,
        document_count=0,
        strip_html=True,
        ngrams=1,
        buckets=2**20,
        engine="auto",
        **kwargs,
    ):
        if "nb_words" in kwargs:  # Keras' legacy alias
            num_words = kwargs.pop("nb_words")
        if kwargs:
            raise TypeError(f"Tokenizer: unrecognized keyword arguments: {sorted(kwargs)}")
        if num_words is not None and (isinstance(num_words, bool) or not isinstance(num_words, (int, np.integer)) or num_words < 0):
            raise ValueError(f"Tokenizer: argument 'num_words' must be None or an int >= 0, got {num_words!r}")
        if isinstance(ngrams, bool) or not isinstance(ngrams, (int, np.integer)) or ngrams < 1:
            raise ValueError(f"Tokenizer: argument 'ngrams' must be an int >= 1, got {ngrams!r}")
        if isinstance(buckets, bool) or not isinstance(buckets, (int, np.integer)) or buckets < 1:
            raise ValueError(f"Tokenizer: argument 'buckets' must be an int >= 1, got {buckets!r}")
        if not isinstance(split, str) or not split:
            raise ValueError(f"Tokenizer: argument 'split' must be a non-empty str, got {split!r}")
        if engine not in ENGINES:
            raise ValueError(f"Tokenizer: argument 'engine' must be one of {ENGINES}, got {engine!r}")
        if engine == "cpp" and _cpp_module()[0] is None:
            from fastscale import _backends

            _backends.module("cpp")  # raises BackendUnavailableError saying why and how to get it
            raise _backends.BackendUnavailableError("Tokenizer: engine='cpp': fastscale._cpu has no tokenizer; rebuild it")
        self.engine = engine
        self.word_counts = OrderedDict()
        self.word_docs = defaultdict(int)
        self.filters = filters
        self.split = split
        self.lower = lower
        self.num_words = None if num_words is None else int(num_words)
        self.document_count = document_count
        self.char_level = char_level
        self.oov_token = oov_token
        self.index_docs = defaultdict(int)
        self.word_index = {}
        self.index_word = {}
        self.strip_html = bool(strip_html)
        self.ngrams = int(ngrams)
        self.buckets = int(buckets)
        self._hashes = _HashCache()
        self._lookup_cache = None
        self._fit_cache = None
        self._plain_index = None  # (word_index, its size) when _rebuild_index made it: ids 1..n
        self._pending = None  # a C++ fit's vocabulary whose Keras dicts are not built yet

    # ---------------------------------------------------------------- tokenizing
    def _tokenizer(self):
        """A function text -> list of tokens for the current options (tables built once)."""
        lower, strip, split = self.lower, self.strip_html, self.split
        br_sub = _BR.sub

        def prep(text):
            if strip and "<" in text:
                text = br_sub(" ", text)
            return text.lower() if lower else text

        if self.char_level:

            def tokens(text):
                if isinstance(text, list):
                    return [t.lower() for t in text] if lower else list(text)
                return list(prep(text))

            return tokens

        table = str.maketrans({c: split for c in self.filters})
        if split == " ":
            # Whitespace that survives translation (not in filters) would make split() differ.
            residual = "".join(c for c in _OTHER_WS if c not in self.filters)
            has_other_ws = re.compile("[" + re.escape(residual) + "]").search if residual else None

            def tokens(text):
                if isinstance(text, list):
                    return [t.lower() for t in text] if lower else list(text)
                text = prep(text).translate(table)
                if has_other_ws is None or has_other_ws(text) is None:
                    return text.split()
                return list(filter(None, text.split(" ")))

        else:

            def tokens(text):
                if isinstance(text, list):
                    return [t.lower() for t in text] if lower else list(text)
                return list(filter(None, prep(text).translate(table).split(split)))

        return tokens

    @_texts_method
    def tokenize(self, texts):
        """The token lists of ``texts`` as ``fit_on_texts`` and ``texts_to_sequences`` see them."""
        tok = self._tokenizer()
        return [tok(t) for t in texts]

    # ---------------------------------------------------------------- fitting
    @_texts_method
    def fit_on_texts(self, texts):
        """Update the vocabulary from ``texts`` (str, or list of tokens), as Keras does.

        When ``texts`` is a list or tuple, the token ids of this fit are kept (4 bytes a token,
        up to 2**26 tokens) until the next fit, so that encoding exactly these text objects
        again (``texts_to_sequences(texts)``, ``texts_to_bags(texts)``) skips tokenizing.
        """
        self._fit_cache = None
        mod = self._cpp()
        if mod is None or isinstance(texts, (list, tuple)):
            # A first fit by the C++ tokenizer leaves Keras' dicts to be built when first read.
            lazy = mod is not None and self._pending is None and not self.word_counts and not self.index_docs
            if self._fit_batch(texts, mod, isinstance(texts, (list, tuple)), lazy):
                return
        else:  # an iterator: bounded batches, merged in order (first-seen order is kept)
            it, start = iter(texts), 0
            while batch := list(islice(it, _FIT_BATCH)):
                try:
                    self._fit_batch(batch, mod, False)
                except (TypeError, AttributeError) as e:
                    # The batches before stay fitted (Keras keeps the texts before a bad one):
                    # index them, so that the tokenizer is consistent.
                    self._rebuild_index()
                    _bad_text("fit_on_texts", batch, e, start)
                start += len(batch)
        self._rebuild_index()

    def _fit_batch(self, texts, mod, keep, lazy=False):
        """Fit one batch; True when ``lazy`` was honoured (the vocabulary is left pending:
        the index needs no rebuild)."""
        fitted = None if mod is None else self._fit_cpp(mod, texts, keep)
        if fitted is None:
            fitted = self._fit_python(texts, keep)
        words, counts, docs, n_texts, cache = fitted[:5]
        self.document_count += n_texts
        # Fitting then encoding the same texts is the common case: keep their provisional ids
        # (4 bytes a token) so that encoding them needs no second tokenizing pass.
        if cache is not None:
            self._fit_cache = (tuple(texts), self._options(), words) + cache
        if lazy and len(fitted) > 5 and (self.oov_token is None or self.oov_token not in words):
            self._set_pending(_Pending(words, counts, docs, self.oov_token, fitted[5]))
            return True
        if isinstance(counts, np.ndarray):
            counts, docs = counts.tolist(), docs.tolist()
        if self.word_counts:
            wc, wd = self.word_counts, self.word_docs
            for w, c, d in zip(words, counts, docs):
                wc[w] = wc.get(w, 0) + c
                wd[w] = wd.get(w, 0) + d
        else:
            self.word_counts = OrderedDict(zip(words, counts))
            self.word_docs = defaultdict(int, zip(words, docs))
        return False

    # ---------------------------------------------------------------- the pending vocabulary
    def _set_pending(self, pending):
        """Make Keras' vocabulary attributes those of ``pending``, each built on first read."""
        for name in _LAZY_ATTRS:
            self.__dict__.pop(name, None)
        self._pending = pending
        self._lookup_cache = None
        self._plain_index = None

    def _materialize(self, name):
        """Build the pending attribute ``name`` (the others stay pending)."""
        p = self._pending
        if p is None:  # e.g. deleted by the user: Keras' empty value
            value = _LAZY_ATTRS[name]()
        elif name == "word_counts":
            value = OrderedDict(zip(p.words, p.counts.tolist()))
        elif name == "word_docs":
            value = defaultdict(int, zip(p.words, p.docs.tolist()))
        elif name == "word_index":
            value = dict(zip(p.sorted_vocabulary(), range(1, p.n_index + 1)))
            self._plain_index = (value, len(value))  # ids 1..n, as _rebuild_index makes them
        elif name == "index_word":
            value = dict(zip(range(1, p.n_index + 1), p.sorted_vocabulary()))
        else:  # index_docs: word -> id, in first-seen order, as _rebuild_index's update makes it
            value = defaultdict(int, zip(p.index_of_words().tolist(), p.docs.tolist()))
        self.__dict__[name] = value
        if p is not None and all(n in self.__dict__ for n in _LAZY_ATTRS):
            self._pending = None
        return value

    def _fit_python(self, texts, keep):
        """``(words in first-seen order, counts, docs, number of texts, cache or None)``."""
        tok = self._tokenizer()
        first_seen = _Enumerator()  # word -> provisional id, in first-seen order
        get = first_seen.__getitem__
        arrays = []
        for text in texts:
            seq = tok(text)
            arrays.append(np.fromiter(map(get, seq), dtype=np.int32, count=len(seq)))
        words = list(first_seen)
        counts, docs = _count(arrays, len(words))
        cache = None
        total = sum(map(len, arrays))
        if keep and total <= _FIT_CACHE_TOKENS:
            lens = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
            offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
            np.cumsum(lens, out=offsets[1:])
            prov = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)
            cache = (prov, offsets, None)
        return words, counts, docs, len(arrays), cache

    def _cpp(self):
        """The extension module when the C++ tokenizer handles the current options, else None."""
        if self.engine == "python" or self.char_level:
            return None
        if not isinstance(self.split, str) or len(self.split) != 1 or not isinstance(self.filters, str):
            return None
        return _cpp_module()[0]

    def _scan_cpp(self, mod, texts, keep_ids, keep_max_chars=-1):
        """The C++ tokenizer's pass over ``texts`` (None if one is not an exact ``str``)."""
        return mod.tokenizer_fit(
            texts, bool(self.lower), bool(self.strip_html), self.split, self.filters, _cpp_module()[1], keep_ids,
            _CPP_PARALLEL_MIN_CHARS, keep_max_chars,
        )

    def _fit_cpp(self, mod, texts, keep):
        """``(words, counts, docs, number of texts, cache or None, count order)`` or None."""
        # Keeping the ids costs 8 bytes a token during the fit: not for a corpus whose ids
        # would not be cached anyway (a token takes >= 2 characters but the last).
        r = self._scan_cpp(mod, texts, keep, 8 * _FIT_CACHE_TOKENS)
        if r is None:
            return None
        words, counts, docs, whash, prov, offsets, surrogate, order = r
        cache = None
        if prov is not None and len(prov) <= _FIT_CACHE_TOKENS:
            # A lone surrogate: fnv1a_32 (str.encode) raises; n-grams then take the Python path.
            cache = (prov, offsets, None if surrogate else whash)
        return words, counts, docs, len(offsets) - 1, cache, order

    def _options(self):
        return (self.filters, self.lower, self.split, self.char_level, self.strip_html)

    def _cached(self, texts):
        """The provisional ids of ``texts`` if they are exactly the last fitted texts."""
        c = self._fit_cache
        if (
            c is None
            or not isinstance(texts, (list, tuple))
            or len(texts) != len(c[0])
            or c[1] != self._options()
            or not all(map(operator.is_, texts, c[0]))  # str is immutable: same object, same text
        ):
            return None
        return c  # (texts, options, words, provisional ids int32, offsets int64, word hashes or None)

    def fit_on_sequences(self, sequences):
        """Keras' ``fit_on_sequences``: ``index_docs`` from id sequences."""
        for seq in sequences:
            self.document_count += 1
            for i in set(seq):
                self.index_docs[i] += 1

    def _rebuild_index(self):
        sorted_voc = [] if self.oov_token is None else [self.oov_token]
        words = list(self.word_counts)
        counts = np.array(list(self.word_counts.values()))
        if counts.dtype.kind in "ib" and counts.size:
            # Keras' stable sort by descending count, as a stable argsort of -count.
            order = np.argsort(-counts.astype(np.int64), kind="stable")
            sorted_voc.extend(map(words.__getitem__, order.tolist()))
        else:  # counts that are not all ints (an edited word_counts): Python's own sort
            wcounts = sorted(self.word_counts.items(), key=lambda x: x[1], reverse=True)  # stable
            sorted_voc.extend(w for w, _ in wcounts)
        # Keras' dict(zip(...)): if oov_token also occurs as a word, the word's (later) index
        # wins and index 1 is left unused.  Kept for exact compatibility.
        self.word_index = wi = dict(zip(sorted_voc, range(1, len(sorted_voc) + 1)))
        self.index_word = dict(zip(wi.values(), wi.keys()))
        wd = self.word_docs
        self.index_docs.update(zip(map(wi.__getitem__, wd), wd.values()))
        self._lookup_cache = None
        self._plain_index = (wi, len(wi))
        self._pending = None  # every vocabulary attribute has been read or replaced above

    # ---------------------------------------------------------------- sizes
    @property
    def vocab_size(self):
        """Ids of words are in ``[0, vocab_size)``: ``num_words`` if set, else
        ``max(word_index) + 1`` (= ``len(word_index) + 1`` unless ``oov_token`` is also a word)."""
        if self.num_words:
            return self.num_words
        if self._pending is not None and "word_index" not in self.__dict__:
            return self._pending.n_index + 1
        return max(self.word_index.values(), default=0) + 1

    def _index_size(self):
        """``len(word_index)``, without building a pending one."""
        if self._pending is not None and "word_index" not in self.__dict__:
            return self._pending.n_index
        return len(self.word_index)

    @property
    def num_ids(self):
        """The number of rows an Embedding needs for every id this tokenizer emits."""
        return self.vocab_size + (self.buckets if self.ngrams > 1 else 0)

    # ---------------------------------------------------------------- encoding
    def _lookup(self):
        """``(lut, plain, encode)``: ``lut`` maps word -> final id (num_words and OOV applied;
        unknown words give the OOV id); ``plain`` says every id is an int >= 1 (no Keras edge
        case); ``encode`` maps a token list to its id list.  Cached until the vocabulary changes."""
        # The dict itself is kept (compared with `is`): a new word_index never reuses a stale map.
        key = (self.num_words, self.oov_token, len(self.word_index))
        c = self._lookup_cache
        if c is not None and c[0] is self.word_index and c[1] == key:
            return c[2]
        num_words = self.num_words
        oov_index = self.word_index.get(self.oov_token)
        wi = self.word_index
        if not num_words:
            lut = _OOVLookup(wi)
        elif oov_index is None:
            lut = _OOVLookup({w: i for w, i in wi.items() if not i >= num_words})
        else:
            lut = _OOVLookup({w: (oov_index if i >= num_words else i) for w, i in wi.items()})
        lut.oov = oov_index
        plain = all(type(i) is int and i >= 1 for i in lut.values())
        if self.oov_token is not None:
            # Keras appends word_index.get(oov_token) for unknown words (None if never fitted).
            plain = plain and type(oov_index) is int and oov_index >= 1
            encode = lambda seq: list(map(lut.__getitem__, seq))  # noqa: E731
        elif not plain:
            encode = lambda seq: [i for i in map(lut.get, seq) if i is not None]  # noqa: E731
        else:  # ids are >= 1, so filter(None) drops exactly the unknown words
            encode = lambda seq: list(filter(None, map(lut.get, seq)))  # noqa: E731
        self._lookup_cache = (self.word_index, key, (lut, plain, encode))
        return lut, plain, encode

    def _encode_cached(self, texts):
        """For the last fitted texts, from their cached provisional ids: ``(word ids int64,
        word offsets int64 (B+1,), token hashes uint64 or None, tokens per text)``; else None."""
        c = self._cached(texts)
        if c is None:
            return None
        lut, plain, _ = self._lookup()
        if not plain:
            return None
        _, _, words, prov, offsets, _ = c
        lens = np.diff(offsets)
        miss = -1 if self.oov_token is None else lut.oov
        final = np.fromiter((lut.get(w, miss) for w in words), dtype=np.int64, count=len(words))
        ids = final[prov]
        if self.oov_token is None:  # drop unknown words and those >= num_words
            keep = ids >= 0
            kept = np.zeros(len(ids) + 1, dtype=np.int64)
            np.cumsum(keep, out=kept[1:])
            ids, woff = ids[keep], kept[offsets]
        else:
            woff = offsets
        hashes = None
        if self.ngrams > 1:
            hw = np.fromiter(map(self._hashes.__getitem__, words), dtype=np.uint64, count=len(words))
            hashes = hw[prov]
        return ids, woff, hashes, lens

    def _token_hashes(self, token_lists):
        lens = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
        hget = self._hashes.__getitem__
        flat = np.fromiter(chain.from_iterable(map(hget, t) for t in token_lists), dtype=np.uint64, count=int(lens.sum()))
        return flat, lens

    def _ngram_ids(self, hashes, lens, chunk_tokens=1 << 20):
        """All n-gram ids (int64, text after text) and how many each text has, from the flat
        token hashes and tokens per text.  Chunks of about ``chunk_tokens`` tokens bound the
        temporaries."""
        ids, counts = [], []
        ends = np.cumsum(lens)
        i = 0
        while i < len(lens) or not ids:
            base = int(ends[i - 1]) if i else 0
            j = max(int(np.searchsorted(ends, base + chunk_tokens, side="right")), i + 1)
            j = min(j, len(lens))
            stop = int(ends[j - 1]) if j else 0
            a, b = self._ngram_ids_chunk(hashes[base:stop], lens[i:j])
            ids.append(a)
            counts.append(b)
            i = j
            if i >= len(lens):
                break
        return np.concatenate(ids), np.concatenate(counts)

    def _ngram_ids_chunk(self, flat, lens):
        n = self.ngrams
        total = len(flat)
        starts = np.zeros(len(lens), dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        # Tokens left in the own text after position i (an n-gram of length k+1 needs >= k).
        left = np.repeat(starts + lens, lens) - np.arange(total, dtype=np.int64) - 1
        hk = flat
        cols, valid = [], []
        for k in range(1, n):
            # uint64 arithmetic wraps mod 2**64, exactly ngram_hash's recurrence.
            m = max(total - k, 0)  # n-grams of length k+1 that start in this chunk (or cross texts)
            hk = hk[:m] * np.uint64(_NGRAM_MULT) + flat[k : k + m]
            col = np.zeros(total, dtype=np.uint64)
            col[:m] = hk
            cols.append(col)
            valid.append(left >= k)
        per_text = np.zeros(len(lens), dtype=np.int64)
        if total == 0:
            return np.zeros(0, dtype=np.int64), per_text
        # Row-major over (position, length): fastText's order, by start then by length.
        h = np.stack(cols, axis=1)[np.stack(valid, axis=1)]
        ids = (h % np.uint64(self.buckets)).astype(np.int64) + self.vocab_size
        for k in range(1, n):
            per_text += np.maximum(lens - k, 0)
        return ids, per_text

    def _encode_cpp(self, texts, int32, as_lists=False):
        """``(ids, offsets)`` (or, ``as_lists``, the id lists) of ``texts`` (a list or tuple)
        from the C++ tokenizer, or None
        when the Python code must do it (options, inputs, or a Keras edge case it leaves to
        the reference)."""
        mod = self._cpp()
        if mod is None:
            return None
        c = self._cached(texts)
        if c is not None:
            _, _, words, prov, offsets, whash = c
        else:
            r = self._scan_cpp(mod, texts, True)
            if r is None:
                return None
            words, _, _, whash, prov, offsets, surrogate, _ = r
            if surrogate:
                whash = None
        if self.ngrams > 1 and whash is None:
            return None
        final = self._final_ids(words)
        if final is None:
            return None
        if int32 and final.size and (int(final.max()) > _INT32_MAX or (self.ngrams > 1 and self.num_ids > _INT32_MAX)):
            return None  # the Python code raises the documented error
        vocab = self.vocab_size if self.ngrams > 1 else 0
        return mod.tokenizer_encode(prov, offsets, final, whash, self.ngrams, self.buckets, vocab, int32, as_lists)

    def _final_ids(self, words):
        """Per word its id as ``texts_to_sequences`` emits it (int64; -1: dropped), or None for
        a Keras edge case left to the Python code."""
        p = self._pending
        if p is not None and "word_index" not in self.__dict__ and self.oov_token == p.oov:
            # The fitted vocabulary, its index not built: ids from the count order.
            mod = _cpp_module()[0]
            if words is p.words or hasattr(mod, "tokenizer_lookup"):
                ids = p.index_of_words()
                miss = -1 if self.oov_token is None else 1
                if self.num_words:
                    ids[ids >= self.num_words] = miss
                if words is p.words:
                    return ids
                # New texts' words: found among the fitted ones by the C++ code.
                pos = mod.tokenizer_lookup(p.words, words)
                out = np.full(len(words), miss, dtype=np.int64)
                hit = pos >= 0
                out[hit] = ids[pos[hit]]
                return out
        wi = self.word_index
        if (
            self._plain_index is not None
            and self._plain_index[0] is wi
            and self._plain_index[1] == len(wi)
            and (self.oov_token is None or self.oov_token in wi)
        ):
            # The index _rebuild_index made (ids 1..n, oov_token in it): numpy does the rest.
            oov = -1 if self.oov_token is None else wi[self.oov_token]
            ids = np.fromiter(map(wi.get, words, repeat(0)), dtype=np.int64, count=len(words))
            if self.num_words:
                ids[ids >= self.num_words] = oov
            ids[ids == 0] = oov
            return ids
        lut, plain, _ = self._lookup()
        if not plain:
            return None
        miss = -1 if self.oov_token is None else lut.oov
        try:
            return np.fromiter(map(lut.get, words, repeat(miss)), dtype=np.int64, count=len(words))
        except OverflowError:
            return None

    @_texts_method
    def texts_to_sequences(self, texts):
        """Each text as a list of ids (then its n-gram ids when ``ngrams > 1``)."""
        if self._cpp() is not None:
            if not isinstance(texts, (list, tuple)):
                texts = list(texts)
            r = self._encode_cpp(texts, False, as_lists=True)
            if r is not None:
                return r
        cached = self._encode_cached(texts)
        if cached is not None:
            ids, woff, hashes, lens = cached
            wl, wo = ids.tolist(), woff.tolist()
            if self.ngrams == 1:
                return [wl[a:b] for a, b in zip(wo, wo[1:])]
            ids, offsets = _interleave(ids, woff, *self._ngram_ids(hashes, lens), np.int64)
            al, ao = ids.tolist(), offsets.tolist()  # one slice per text, no list concatenation
            return [al[a:b] for a, b in zip(ao, ao[1:])]
        tok = self._tokenizer()
        encode = self._lookup()[2]
        if self.ngrams == 1:
            return [encode(tok(t)) for t in texts]
        token_lists = [tok(t) for t in texts]
        gram_ids, per_text = self._ngram_ids(*self._token_hashes(token_lists))
        grams = gram_ids.tolist()
        ends = np.cumsum(per_text).tolist()
        out, s = [], 0
        for toks, e in zip(token_lists, ends):
            out.append(encode(toks) + grams[s:e])
            s = e
        return out

    def texts_to_sequences_generator(self, texts):
        """Keras' generator form of ``texts_to_sequences`` (one text at a time)."""
        op = "texts_to_sequences_generator"
        _check_texts(op, texts)

        def gen():
            for i, t in enumerate(texts):
                what = _not_a_text(t)
                if what:
                    raise _not_a_text_error(op, i, what)
                yield self.texts_to_sequences([t])[0]

        return gen()

    def sequences_to_texts(self, sequences):
        """Ids back to space-joined words, as Keras does (n-gram ids are skipped)."""
        return list(self.sequences_to_texts_generator(sequences))

    def sequences_to_texts_generator(self, sequences):
        num_words = self.num_words
        oov_index = self.word_index.get(self.oov_token)
        limit = self.vocab_size if self.ngrams > 1 else None
        iw = self.index_word
        for seq in sequences:
            vect = []
            for num in seq:
                if limit is not None and num >= limit:
                    continue  # an n-gram id, not a word
                word = iw.get(num)
                if word is not None:
                    if num_words and num >= num_words:
                        if oov_index is not None:
                            vect.append(iw[oov_index])
                    else:
                        vect.append(word)
                elif self.oov_token is not None:
                    vect.append(iw[oov_index])
            yield " ".join(vect)

    @_texts_method
    def texts_to_bags(self, texts):
        """``(ids int32 (N,), offsets int64 (B+1,))`` for ``embedding_bag``: the ids of text
        ``b`` (words, then n-grams) are ``ids[offsets[b]:offsets[b+1]]``; no padding."""
        if self._cpp() is not None:
            if not isinstance(texts, (list, tuple)):
                texts = list(texts)
            r = self._encode_cpp(texts, True)
            if r is not None:
                return r
        cached = self._encode_cached(texts)
        if cached is not None:
            wids, woff, hashes, lens = cached
        else:
            tok = self._tokenizer()
            encode = self._lookup()[2]
            token_lists = [tok(t) for t in texts]
            wids, woff = sequences_to_bags([encode(t) for t in token_lists], dtype=np.int64)
            if self.ngrams > 1:
                hashes, lens = self._token_hashes(token_lists)
        if self.ngrams == 1:
            return _checked_ids(wids, np.int32), woff
        if self.num_ids > np.iinfo(np.int32).max:
            raise ValueError(f"Tokenizer: num_ids {self.num_ids} does not fit int32 ids")
        return _interleave(wids, woff, *self._ngram_ids(hashes, lens), np.int32)

    def sequences_to_bags(self, sequences):
        """Same as the module function ``sequences_to_bags``."""
        return sequences_to_bags(sequences)

    # ---------------------------------------------------------------- matrices (Keras)
    @_texts_method
    def texts_to_matrix(self, texts, mode="binary"):
        """Keras' ``texts_to_matrix``: ``sequences_to_matrix`` of the texts' ids."""
        _check_mode("texts_to_matrix", mode)
        bags = Tokenizer.texts_to_bags.__wrapped__(self, texts)  # a bad text is named by this method
        return self._bags_to_matrix(*bags, mode, "texts_to_matrix")

    def sequences_to_matrix(self, sequences, mode="binary"):
        """Keras' ``sequences_to_matrix``: a float64 ``(len(sequences), num_words)`` matrix
        (``len(word_index) + 1`` columns without ``num_words``); ids at or beyond it are
        skipped, as in Keras.  ``mode``: ``"binary"`` (1 where an id occurs), ``"count"``,
        ``"freq"`` (count / length of the sequence, skipped ids included) or ``"tfidf"``
        (``(1 + log count) * log(1 + document_count / (1 + index_docs[id]))``).  Equal to
        Keras' loop bit for bit, in one vectorised pass."""
        _check_mode("sequences_to_matrix", mode)
        return self._bags_to_matrix(*_to_bags(sequences, np.int64, "sequences_to_matrix"), mode, "sequences_to_matrix")

    def _bags_to_matrix(self, ids, offsets, mode, op):
        if self.num_words:
            width = self.num_words
        elif self._index_size():
            width = self._index_size() + 1
        else:
            raise ValueError(f"Tokenizer.{op}: give the Tokenizer num_words, or fit it on some texts first")
        if mode == "tfidf" and not self.document_count:
            raise ValueError(f"Tokenizer.{op}: mode 'tfidf' needs a Tokenizer fitted on some texts (document_count is 0)")
        n = len(offsets) - 1
        lens = np.diff(offsets)
        rows = np.repeat(np.arange(n, dtype=np.int64), lens)
        keep = ids < width
        x = np.zeros((n, width), dtype=np.float64)
        flat = x.reshape(-1)
        np.add.at(flat, rows[keep] * width + ids[keep], 1.0)  # counts
        if mode == "binary":
            np.minimum(x, 1.0, out=x)
        elif mode == "freq":
            x /= np.maximum(lens, 1)[:, None]  # a row without ids is all zeros anyway
        elif mode == "tfidf":
            docs = np.zeros(width, dtype=np.float64)
            for i, c in self.index_docs.items():
                if 0 <= i < width:
                    docs[i] = c
            idf = np.log(1 + self.document_count / (1 + docs))
            nz = np.flatnonzero(flat)
            flat[nz] = (1 + np.log(flat[nz])) * idf[nz % width]
        return x

    # ---------------------------------------------------------------- JSON
    def get_config(self):
        """Keras' config dict (the vocabularies JSON-encoded as strings) plus fastscale's options."""
        memo = {}
        return self._config({n: self._vocab_json(n, 0, memo) for n in _VOCAB_JSON})

    def _config(self, vocab):
        return {
            "num_words": self.num_words,
            "filters": self.filters,
            "lower": self.lower,
            "split": self.split,
            "char_level": self.char_level,
            "oov_token": self.oov_token,
            "document_count": self.document_count,
            "word_counts": vocab["word_counts"],
            "word_docs": vocab["word_docs"],
            "index_docs": vocab["index_docs"],
            "index_word": vocab["index_word"],
            "word_index": vocab["word_index"],
            "strip_html": self.strip_html,
            "ngrams": self.ngrams,
            "buckets": self.buckets,
        }

    def _vocab_json(self, name, depth, memo):
        """``json.dumps(self.<name>)`` escaped ``depth`` times as the body of a JSON string.
        A vocabulary still pending (a C++ fit's, never read) is written by the C++ code
        straight from its arrays, without building the dict (IMDB: ~5 ms a dict instead of ~50)."""
        p = self._pending
        mod = _cpp_module()[0]
        if p is not None and name not in self.__dict__ and hasattr(mod, "tokenizer_json_object"):
            if name == "word_counts":
                keys, values = p.words, p.counts
            elif name == "word_docs":
                keys, values = p.words, p.docs
            elif name == "index_docs":
                keys, values = p.index_of_words(), p.docs
            else:
                if "sorted" not in memo:
                    memo["sorted"] = p.sorted_vocabulary()
                ids = np.arange(1, p.n_index + 1, dtype=np.int64)
                keys, values = (memo["sorted"], ids) if name == "word_index" else (ids, memo["sorted"])
            return mod.tokenizer_json_object(keys, values, depth)
        return _escape_json(json.dumps(getattr(self, name)), depth)

    def to_json(self, **kwargs):
        """Keras' JSON layout; ``tokenizer_from_json`` restores it exactly.  ``kwargs`` go to
        ``json.dumps``."""
        if kwargs:
            return json.dumps({"class_name": "Tokenizer", "config": self.get_config()}, **kwargs)
        return self._json_text(0)

    def _json_literal(self):
        """``json.dumps(self.to_json())``, made without escaping the vocabularies twice over
        (save_model stores the tokenizer as this string)."""
        return self._json_text(1, quoted=True)

    def _json_text(self, depth, quoted=False):
        """``to_json()`` escaped ``depth`` times: the small pieces by ``json.dumps``, the
        vocabularies written at their final depth by ``_vocab_json``.  (Escaping printable
        ASCII, which all ``json.dumps`` output is, acts on each character alone, so pieces
        escaped apart join to the whole escaped.)"""
        memo = {}
        vocab = {n: self._vocab_json(n, depth + 1, memo) for n in _VOCAB_JSON}
        pieces, small = [], ['{"class_name": "Tokenizer", "config": {']
        for i, (k, v) in enumerate(self._config(vocab).items()):
            small.append((", " if i else "") + json.dumps(k) + ": ")
            if k in vocab:
                small.append('"')
                pieces.append(_escape_json("".join(small), depth))
                pieces.append(v)
                small = ['"']
            else:
                small.append(json.dumps(v))
        small.append("}}")
        pieces.append(_escape_json("".join(small), depth))
        if quoted:
            pieces = ['"', *pieces, '"']
        return "".join(pieces)

    def __repr__(self):
        return (
            f"Tokenizer(num_words={self.num_words!r}, oov_token={self.oov_token!r}, "
            f"lower={self.lower!r}, char_level={self.char_level!r}, strip_html={self.strip_html!r}, "
            f"ngrams={self.ngrams!r}, buckets={self.buckets!r}, vocabulary={self._index_size()})"
        )


_VOCAB_JSON = ("word_counts", "word_docs", "index_docs", "index_word", "word_index")


def _escape_json(s, depth):
    """``s`` written ``depth`` times as the body of a JSON string."""
    for _ in range(depth):
        s = json.dumps(s)[1:-1]
    return s


def tokenizer_from_json(json_string):
    """A ``Tokenizer`` from ``Tokenizer.to_json()`` (fastscale's or Keras')."""
    config = dict(json.loads(json_string)["config"])
    word_counts = json.loads(config.pop("word_counts"))
    word_docs = json.loads(config.pop("word_docs"))
    index_docs = {int(k): v for k, v in json.loads(config.pop("index_docs")).items()}
    index_word = {int(k): v for k, v in json.loads(config.pop("index_word")).items()}
    word_index = json.loads(config.pop("word_index"))
    # A Keras tokenizer never stripped HTML: keep its ids when its JSON lacks the option.
    config.setdefault("strip_html", False)
    tok = Tokenizer(**config)
    # Restore Keras' container types so that fitting can continue.
    tok.word_counts = OrderedDict(word_counts)
    tok.word_docs = defaultdict(int, word_docs)
    tok.index_docs = defaultdict(int, index_docs)
    tok.word_index = word_index
    tok.index_word = index_word
    return tok


def _interleave(wids, woff, gids, gcount, dtype):
    """Per text, its word ids then its n-gram ids: ``(ids, offsets)``."""
    wlen = np.diff(woff)
    offsets = np.zeros(len(wlen) + 1, dtype=np.int64)
    np.cumsum(wlen + gcount, out=offsets[1:])
    ids = np.empty(int(offsets[-1]), dtype=dtype)
    # Word j of text b goes to offsets[b] + j, its n-gram j to offsets[b] + wlen[b] + j.
    ids[np.repeat(offsets[:-1] - woff[:-1], wlen) + np.arange(len(wids))] = wids
    gstart = np.zeros(len(gcount), dtype=np.int64)
    np.cumsum(gcount[:-1], out=gstart[1:])
    ids[np.repeat(offsets[:-1] + wlen - gstart, gcount) + np.arange(len(gids))] = gids
    return ids, offsets


def sequences_to_bags(sequences, dtype=np.int32):
    """Id sequences (lists, 1-D arrays, or the rows of a 2-D array) to ``(ids, offsets)``.

    ``ids``: ``dtype`` (int32 by default) ``(N,)``, all ids back to back; ``offsets``: int64
    ``(B+1,)``, sequence ``b`` is ``ids[offsets[b]:offsets[b+1]]``.  Every id is kept (a
    padded 2-D array keeps its padding ids).
    """
    return _to_bags(sequences, dtype, "sequences_to_bags")


def _to_bags(sequences, dtype, op):
    if isinstance(sequences, np.ndarray):
        if sequences.ndim != 2:
            raise ValueError(f"{op}: argument 'sequences' must be 2-D when an array, got shape {sequences.shape}")
        b, t = sequences.shape
        flat = sequences.reshape(-1)
        offsets = np.arange(0, b * t + 1, max(t, 1), dtype=np.int64) if t else np.zeros(b + 1, dtype=np.int64)
    else:
        seqs = sequences if isinstance(sequences, (list, tuple)) else list(sequences)
        lens = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        flat = np.fromiter(chain.from_iterable(seqs), dtype=np.int64, count=int(offsets[-1]))
    return _checked_ids(flat, dtype, op), offsets


def _checked_ids(flat, dtype, op="sequences_to_bags"):
    """``flat`` as ``dtype`` after checking every id is an integer in ``[0, max of dtype]``."""
    if flat.size and not np.issubdtype(flat.dtype, np.integer):
        raise TypeError(f"{op}: ids must be integers, got dtype {flat.dtype}")
    if flat.size:
        lo, hi = int(flat.min()), int(flat.max())
        info = np.iinfo(dtype)
        if lo < 0 or hi > info.max:
            bad = lo if lo < 0 else hi
            pos = int(np.argmax(flat == bad))
            raise ValueError(f"{op}: ids must be in [0, {info.max}], got {bad} at position {pos}")
    return flat.astype(dtype, copy=False)


_PADDINGS = ("pre", "post")


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre", value=0):
    """Keras' ``pad_sequences``: a ``(len(sequences), maxlen) + sample_shape`` array.

    ``maxlen=None`` pads to the longest sequence (0 for no / only empty sequences).
    ``truncating`` drops from the start (``"pre"``) or the end (``"post"``) of longer
    sequences; ``padding`` puts ``value`` before (``"pre"``) or after (``"post"``).
    """
    if not hasattr(sequences, "__len__"):
        raise ValueError("pad_sequences: argument 'sequences' must be iterable with a length")
    if padding not in _PADDINGS:
        raise ValueError(f'Padding type "{padding}" not understood')
    if truncating not in _PADDINGS:
        raise ValueError(f'Truncating type "{truncating}" not understood')
    n = len(sequences)
    lengths = np.empty(n, dtype=np.int64)
    sample_shape = ()
    flag = True
    for i, x in enumerate(sequences):
        try:
            lengths[i] = len(x)
        except TypeError:
            raise ValueError(f"`sequences` must be a list of iterables. Found non-iterable: {x!s}") from None
        if flag and lengths[i]:
            sample_shape = np.asarray(x).shape[1:]
            flag = False
    if maxlen is None:
        maxlen = int(lengths.max()) if n else 0
    elif maxlen < 0:
        raise ValueError(f"pad_sequences: argument 'maxlen' must be >= 0, got {maxlen}")
    maxlen = int(maxlen)
    is_str = np.issubdtype(np.dtype(dtype), np.str_)
    if isinstance(value, str) and np.dtype(dtype) != object and not is_str:
        raise ValueError(
            f"`dtype` {dtype} is not compatible with `value`'s type: {type(value)}\n"
            "You should set `dtype=object` for variable length strings."
        )
    x = np.full((n, maxlen) + sample_shape, value, dtype=dtype)
    if n == 0 or maxlen == 0:
        return x
    kept = np.minimum(lengths, maxlen)
    if sample_shape == () and np.dtype(dtype) != object:
        # Fast path for 1-D sequences of Python numbers: one flat scatter instead of a loop of
        # slices.  (Rows that are arrays already, e.g. views of one id array, are copied row
        # by row below: that needs no flat copy and no index arrays, which cost more, above
        # all in fresh memory.)
        seqs = sequences if isinstance(sequences, (list, tuple)) else list(sequences)
        flat = None
        if not all(type(s) is np.ndarray for s in seqs):
            try:
                flat = np.fromiter(chain.from_iterable(seqs), dtype=dtype, count=int(lengths.sum()))
            except (TypeError, ValueError):
                flat = None
        if flat is not None:
            src_start = np.zeros(n, dtype=np.int64)
            np.cumsum(lengths[:-1], out=src_start[1:])
            if truncating == "pre":
                src_start += lengths - kept
            dst_col = np.zeros(n, dtype=np.int64) if padding == "post" else maxlen - kept
            # Kept element k of row i (k-th overall) goes to flat position i * maxlen +
            # dst_col[i] + (k - first kept of row i) and comes from src_start[i] + the same.
            first = np.cumsum(kept) - kept
            total = int(kept.sum())
            step = np.arange(total, dtype=np.int64)
            dst = np.repeat(np.arange(n, dtype=np.int64) * maxlen + dst_col - first, kept) + step
            if not np.array_equal(kept, lengths):  # truncated rows: gather the kept part
                flat = flat[np.repeat(src_start - first, kept) + step]
            x.reshape(-1)[dst] = flat
            return x
    for idx, s in enumerate(sequences):
        if not lengths[idx]:
            continue
        trunc = s[-maxlen:] if truncating == "pre" else s[:maxlen]
        trunc = np.asarray(trunc, dtype=dtype)
        if trunc.shape[1:] != sample_shape:
            raise ValueError(
                f"Shape of sample {trunc.shape[1:]} of sequence at position {idx} "
                f"is different from expected shape {sample_shape}"
            )
        if padding == "post":
            x[idx, : len(trunc)] = trunc
        else:
            x[idx, -len(trunc) :] = trunc
    return x
