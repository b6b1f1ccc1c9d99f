"""``load_npy``: plain arrays, W-TALC-style object arrays under every pickle protocol and numpy module path, and
refusal (by message, with no side effect) of everything a pickle could use to run code."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from ftcl_plugin.data import load_npy
from ftcl_plugin.data.npy import ADMITTED_GLOBALS, npy_header
from tests.pickle_payloads import (
    Payload,
    unrestricted_load,
    write_array_pickle,
    write_malicious,
    write_object_npy,
)


class Calls:
    """Unpickles as ``function(*args)``."""

    def __init__(self, function, *args) -> None:  # noqa: ANN001
        self.function, self.args = function, args

    def __reduce__(self):  # noqa: ANN204
        return self.function, self.args


def w_talc_like() -> list:
    # The shapes of W-TALC's own annotation and feature arrays: lists of [start, end] floats, lists of labels,
    # per-video float arrays.
    return [[[67.5, 75.9], [85.9, 90.6]], ["Billiards", "Billiards"], np.arange(12, dtype=np.float32).reshape(3, 4)]


def same(a, b) -> bool:  # noqa: ANN001
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


def test_plain_arrays_read_as_numpy_does(tmp_path):
    for array in (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([b"validation", b"test"]),
                  np.zeros((0, 4)), np.asfortranarray(np.ones((3, 2)))):
        np.save(tmp_path / "a.npy", array)
        loaded = load_npy(tmp_path / "a.npy")
        assert loaded.dtype == array.dtype and np.array_equal(loaded, array)
        assert npy_header(tmp_path / "a.npy") == (array.shape, array.dtype)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_object_arrays_of_every_protocol(tmp_path, protocol):
    items = [*w_talc_like(), np.float64(2.5), {1, 2}, frozenset({3}), 1 + 2j, b"raw", bytearray(b"ab"),
             {"a": (1, None, True)}]
    path = write_object_npy(tmp_path / "o.npy", items, protocol=protocol)
    loaded = load_npy(path, allow_objects=True)
    assert loaded.dtype == object and loaded.shape == (len(items),)
    assert all(same(x, y) for x, y in zip(loaded, items))


def test_numpy_1_module_paths_are_read(tmp_path):
    # numpy 1.x pickles name numpy.core.multiarray._reconstruct (W-TALC's files do); numpy 2.x writes
    # numpy._core. Protocol 2 names globals as text lines, so the older path can be written in place.
    array = np.empty(3, dtype=object)
    array[:] = w_talc_like()
    data = write_array_pickle(tmp_path / "new.npy", array, protocol=2).read_bytes()
    data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data
    (tmp_path / "old.npy").write_bytes(data)
    loaded = load_npy(tmp_path / "old.npy", allow_objects=True)
    assert all(same(x, y) for x, y in zip(loaded, w_talc_like()))


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes ``bytes`` as Python 2's ``str`` (SHORT_BINSTRING), as W-TALC's own files hold their labels."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def _save_py2_str(self, obj: bytes) -> None:
        self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def test_python2_strings_follow_the_encoding(tmp_path):
    array = np.empty(2, dtype=object)
    array[0], array[1] = [b"Billiards"], [b"caf\xe9"]
    with open(tmp_path / "py2.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "|O", "fortran_order": False, "shape": (2,)})
        _Py2Pickler(handle, protocol=2).dump(array)
    assert load_npy(tmp_path / "py2.npy", allow_objects=True, encoding="latin1").tolist() == [["Billiards"],
                                                                                              ["café"]]
    assert load_npy(tmp_path / "py2.npy", allow_objects=True, encoding="bytes").tolist() == [[b"Billiards"],
                                                                                             [b"caf\xe9"]]
    with pytest.raises(ValueError, match=r"py2\.npy is not a readable \.npy object array: UnicodeDecodeError"):
        load_npy(tmp_path / "py2.npy", allow_objects=True)  # ASCII, numpy.load's default


def test_the_payload_is_live_and_load_npy_refuses_it(tmp_path):
    marker = tmp_path / "marker"
    path = write_malicious(tmp_path / "evil.npy", marker, also=[["Billiards"]])
    unrestricted_load(path)  # what allow_pickle=True would do
    assert marker.exists()
    marker.unlink()
    name = f"{os.system.__module__}.system"  # posix.system on Linux
    with pytest.raises(ValueError, match=rf"File .*evil\.npy holds a pickle that asks for the global `{name}`; it was "
                                         r"refused without being imported or called"):
        load_npy(path, allow_objects=True)
    with pytest.raises(ValueError, match=r"evil\.npy holds a pickled object array, which is not read here"):
        load_npy(path)
    assert not marker.exists()


@pytest.mark.parametrize(("payload", "refused"), [
    (Calls(eval, "1 + 1"), "builtins.eval"),
    (Calls(getattr, 1, "real"), "builtins.getattr"),
    (Calls(__import__, "os"), "builtins.__import__"),
    (Calls(np.load, "x.npy"), "numpy.load"),
    (Calls(pickle.loads, b"."), "_pickle.loads"),
    (Calls(np.frompyfunc, print, 1, 1), "numpy.frompyfunc"),
    (Calls(Path, "/"), "pathlib.Path"),
    (Payload("true"), f"{os.system.__module__}.system"),
])
def test_every_other_global_is_refused(tmp_path, payload, refused):
    path = write_object_npy(tmp_path / "x.npy", [payload])
    with pytest.raises(ValueError, match=rf"asks for the global `{refused}`"):
        load_npy(path, allow_objects=True, kind="W-TALC file")
    assert ("builtins", "eval") not in ADMITTED_GLOBALS and ("os", "system") not in ADMITTED_GLOBALS


class Opcodes:
    """Hand-written pickles of what numpy's constructors could be misused for. Unrestricted, the first crashes
    the interpreter (SIGSEGV) and the second leaves numpy with a float64 dtype flagged as holding references
    (numpy raises SystemError), as checked when these were written."""

    @staticmethod
    def ndarray_over_raw_bytes() -> bytes:
        # numpy.ndarray((1,), dtype('O8'), b"AAAAAAAA"): raw bytes read as an object pointer (a segfault, or worse)
        return (b"\x80\x03cnumpy\nndarray\nK\x01\x85cnumpy\ndtype\nU\x02O8\x89\x88\x87R"
                b"C\x08AAAAAAAA\x87R.")

    @staticmethod
    def float_dtype_marked_as_object() -> bytes:
        # an array of dtype 'f8' whose dtype state carries the object flags (63): floats treated as references
        return (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
                b"(K\x01K\x01\x85cnumpy\ndtype\nU\x02f8\x89\x88\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xff"
                b"J\xff\xff\xff\xffK?tb\x89U\x08AAAAAAAAtb.")

    @staticmethod
    def structured_dtype() -> bytes:
        return b"\x80\x02cnumpy\ndtype\nU\x02V8\x89\x88\x87R."


@pytest.mark.parametrize(("name", "refused"), [
    ("ndarray_over_raw_bytes", r"asks for a call of numpy\.ndarray"),
    ("float_dtype_marked_as_object", r"asks for a dtype state \(3, '<', None, None, None, -1, -1, 63\)"),
    ("structured_dtype", r"asks for a numpy.dtype\('V8'\)"),
])
def test_numpy_constructors_cannot_be_misused(tmp_path, name, refused):
    path = tmp_path / f"{name}.npy"
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "|O", "fortran_order": False, "shape": (1,)})
        handle.write(getattr(Opcodes, name)())
    # In a child process: if a check ever regresses, numpy may crash, which must fail this test, not the suite.
    code = ("import sys\nfrom ftcl_plugin.data import load_npy\n"
            "try:\n    load_npy(sys.argv[1], allow_objects=True)\nexcept ValueError as error:\n"
            "    print(error)\n    sys.exit(3)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120, check=False)
    assert done.returncode == 3, done.stderr
    assert re.search(rf"{name}\.npy holds a pickle that {refused}", done.stdout)


def test_codecs_encode_is_admitted_for_text_codecs_only(tmp_path):
    path = write_object_npy(tmp_path / "x.npy", [Calls(__import__("_codecs").encode, "abc", "hex")])
    with pytest.raises(ValueError, match="asks for _codecs.encode for anything but text with latin1/ascii/utf-8"):
        load_npy(path, allow_objects=True)


def test_header_and_pickle_must_agree(tmp_path):
    with open(tmp_path / "dict.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "|O", "fortran_order": False, "shape": (2,)})
        pickle.dump({"not": "an array"}, handle, protocol=2)
    with pytest.raises(ValueError, match=r"declares shape \(2,\) in its header but its pickle holds dict"):
        load_npy(tmp_path / "dict.npy", allow_objects=True)
    with open(tmp_path / "persistent.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "|O", "fortran_order": False, "shape": (1,)})
        handle.write(b"\x80\x02U\x01xQ.")  # PERSID: a persistent id the default unpickler would hand on
    with pytest.raises(ValueError, match=r"holds a pickle that asks for a persistent id 'x'; it was refused"):
        load_npy(tmp_path / "persistent.npy", allow_objects=True)


def test_files_that_are_not_arrays(tmp_path):
    with pytest.raises(ValueError, match=r"File .*nowhere\.npy does not exist"):
        load_npy(tmp_path / "nowhere.npy")
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(ValueError, match=r"dir\.npy is a directory, not a regular file; it is not read"):
        load_npy(tmp_path / "dir.npy")
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(ValueError, match=r"Feature file .*text\.npy is not a readable \.npy array"):
        load_npy(tmp_path / "text.npy", kind="Feature file")
    pickle_only = tmp_path / "pickle.npy"
    pickle_only.write_bytes(pickle.dumps(Payload("true")))  # a bare pickle, as numpy.load would also accept
    with pytest.raises(ValueError, match="is not a readable .npy array"):
        load_npy(pickle_only, allow_objects=True)
    with pytest.raises(ValueError, match="`encoding` must be one of ASCII, latin1, bytes, but got 'utf-8'"):
        load_npy(tmp_path / "text.npy", encoding="utf-8")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "features.npy"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            load_npy(fifo)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            outcome.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)  # a watchdog, not a speed check: a blocking open() would wait forever for a writer
    if reader.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # release the blocked reader before failing
        pytest.fail("load_npy blocked on a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], ValueError)
    assert "features.npy is a FIFO (named pipe), not a regular file" in str(outcome[0])
