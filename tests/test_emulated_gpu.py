"""The emulated GPU of the test suites (tests/emulated_gpu.py): the CuPy behaviours its
stand-in models, its guarded memory, and the FASTSCALE_TEST_EMULATED_GPU switch.

These run in every mode: the stand-in module is used directly, never installed here (the
switch is checked in a subprocess).
"""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from . import emulated_gpu as E

cp = E._MODULE


def test_no_implicit_host_device_conversion():
    a = cp.asarray(np.arange(3.0))
    assert not isinstance(a, np.ndarray) and isinstance(a, cp.ndarray)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(a)
    for bad in (lambda: a + np.ones(3), lambda: np.ones(3) * a, lambda: cp.maximum(a, np.ones(3)), lambda: a + [1, 2, 3]):
        with pytest.raises(TypeError, match="Unsupported type"):
            bad()
    assert isinstance(np.exp(a), cp.ndarray)  # numpy functions dispatch to the stand-in
    assert isinstance(np.concatenate([a, a]), cp.ndarray)
    np.testing.assert_array_equal(a.get(), [0, 1, 2])
    a[...] = np.array([4.0, 5.0, 6.0])  # setitem copies host values, as CuPy does
    np.testing.assert_array_equal(cp.asnumpy(a), [4, 5, 6])


def test_scalars_are_0d_arrays_without_index():
    a = cp.asarray(np.array([1, 2, 3], np.int64))
    for s in (a.sum(), a[1], cp.count_nonzero(a), a.max()):
        assert isinstance(s, cp.ndarray) and s.shape == ()
    assert int(a.sum()) == 6 and float(a[1]) == 2.0 and bool(a[0])
    with pytest.raises(TypeError):
        range(a[1])  # no __index__ on CuPy arrays
    with pytest.raises(ValueError, match="ambiguous"):
        bool(a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DeprecationWarning):
            bool(a[:0])
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        z = cp.asarray(np.zeros(2)) / 0.0  # no floating-point warnings on a GPU
    assert np.isnan(z.get()).all()


def test_integer_indices_wrap_and_repeated_writes_keep_the_first():
    a = cp.asarray(np.arange(3.0))
    np.testing.assert_array_equal(a[[1, 3]].get(), [1, 0])
    np.testing.assert_array_equal(a[cp.asarray(np.array([-1, 4]))].get(), [2, 1])
    b = cp.zeros(2)
    b[cp.asarray(np.array([0, 1, 0, 1]))] = cp.asarray(np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(b.get(), [1, 2])  # numpy would keep the last: [3, 4]
    with pytest.raises(IndexError):
        a[3]  # a scalar index is checked, as in CuPy


def test_ufunc_at_and_scatter_add():
    a = cp.zeros((3, 2), np.float32)
    cp.add.at(a, cp.asarray(np.array([0, 2, 0])), cp.asarray(np.ones((3, 2), np.float32)))
    np.testing.assert_array_equal(a.get(), [[2, 2], [0, 0], [1, 1]])
    with pytest.raises(NotImplementedError):
        cp.multiply.at(a, cp.asarray(np.array([0])), 2.0)
    with pytest.warns(DeprecationWarning, match="scatter_add"):
        a.scatter_add(cp.asarray(np.array([1])), 5.0)
    assert float(a[1, 0]) == 5.0
    with pytest.raises(TypeError, match="add.at only supports"):
        cp.add.at(cp.zeros(2, np.int8), cp.asarray(np.array([0])), 1)


def test_old_cupy_limits_are_modelled():
    counts = cp.asarray(np.array([1, 2]))
    with pytest.raises(ValueError, match="repeats"):
        cp.repeat(cp.arange(2), counts)
    np.testing.assert_array_equal(cp.repeat(cp.arange(2), 2).get(), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="zero-size"):
        cp.bincount(cp.zeros(0, np.int64), minlength=3)
    np.testing.assert_array_equal(cp.bincount(cp.asarray(np.array([1, 1])), minlength=3).get(), [0, 2, 0])


def test_memory_layout_flags_and_pointers():
    assert cp.empty(0).data.ptr == 0 and cp.zeros((0, 3)).data.ptr == 0  # nothing allocated, as CuPy
    a = cp.empty((5, 3), np.float32)
    assert np.isnan(a.get()).all()  # empty() is 0xff bytes: NaN
    assert a.data.ptr % 16 == 0 and a[1:].data.ptr == a.data.ptr + 12
    assert set(vars(a.flags)) == {"c_contiguous", "f_contiguous", "owndata"}  # no writeable / aligned
    assert not a.T.flags.c_contiguous and a.T.flags.f_contiguous
    f = cp.asarray(np.asfortranarray(np.ones((2, 3))))
    assert f.flags.f_contiguous and not f.flags.c_contiguous  # CuPy keeps Fortran order
    assert cp.ascontiguousarray(f).flags.c_contiguous
    assert a.__cuda_array_interface__["data"][0] == a.data.ptr


def test_canaries_report_a_write_outside_an_array():
    E.begin_test()
    a = cp.empty(5, np.uint8)  # 11 canary bytes between it and the guard page
    blk = a._blk
    blk.raw[blk.start + 5] = 0
    assert E.take_violations() == ["a write past the end of a 5-byte device array"]
    blk.raw[blk.start - 1] = 0
    del a, blk
    assert E.take_violations() == ["a write before the start of a 5-byte device array"]  # found when freed
    assert E.take_violations() == []


def test_a_kernel_reading_past_an_array_is_an_illegal_address():
    try:
        emu = E.load_cuda_emu()
    except ImportError as e:
        pytest.skip(str(e))
    from fastscale.ops import _cuda_util as CU

    V, D = 4, 8
    w = cp.asarray(np.ones((V, D), np.float32))
    ids = cp.asarray(np.array([3], np.int64))
    out = cp.empty((1, D), np.float32)
    err = cp.asarray(np.full(2, CU.NO_ERROR, np.uint64))
    emu.embedding_forward(w.data.ptr, ids.data.ptr, out.data.ptr, V, D, 1, 4, 8, err.data.ptr, 0, 0)
    np.testing.assert_array_equal(out.get(), 1.0)
    # The launcher told the table has 5 rows: row 4 lies past the end of the allocation.
    ids5 = cp.asarray(np.array([4], np.int64))
    with pytest.raises(RuntimeError, match="illegal memory access"):
        emu.embedding_forward(w.data.ptr, ids5.data.ptr, out.data.ptr, V + 1, D, 1, 4, 8, err.data.ptr, 0, 0)


def _backends_in_subprocess(emulated: bool):
    env = dict(os.environ)
    env.pop(E.ENV, None)
    if emulated:
        env[E.ENV] = "1"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = "import tests.conftest, fastscale, sys; print(repr(fastscale.backends())); print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    return eval(lines[-2]), lines[-1] == "True"  # noqa: S307 - our own repr of a dict of str / None


def test_the_switch():
    try:
        E.load_cuda_emu()
    except ImportError as e:
        pytest.skip(str(e))
    status, _ = _backends_in_subprocess(True)
    assert status["cuda"] is None and status["cupy"] is None
    if E.enabled():
        return
    status, _ = _backends_in_subprocess(False)
    assert status == __import__("fastscale").backends()  # the normal mode is untouched
