"""A corpus of hostile pickle payloads, built by code (no binary blobs of real exploits).

Every payload is harmless but detectable: if it ever runs, it creates the marker file it was
built for. ``tests/test_safety_hostile.py`` proves each payload is live (plain ``pickle.loads``
in a subprocess creates the marker) and that persistkit refuses every one without a marker.
"""

from __future__ import annotations

import builtins
import code
import cProfile
import functools
import importlib
import operator
import os
import pdb
import pkgutil
import profile
import pydoc
import runpy
import shutil
import subprocess
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Call:
    """Pickles as ``func(*args)`` (a REDUCE); nest Calls to chain resolvers."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args

    def __call__(self, *args: Any) -> Any:  # pickle insists that a reducer be callable
        raise AssertionError("never called")


def _python(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def _script(marker: Path) -> Path:
    script = marker.with_name(marker.name + ".py")
    script.write_text(_python(marker) + "\n")
    return script


def _import(module: str) -> Call:
    return Call(importlib.import_module, module)


def _attr(obj: Any, name: str) -> Call:
    return Call(getattr, obj, name)


# name -> builder(marker) returning the object to pickle; the object's pickle runs the payload
REDUCE_PAYLOADS: dict[str, Callable[[Path], Any]] = {
    "os.system": lambda m: Call(os.system, f"touch {m}"),
    "os.popen": lambda m: Call(os.popen, f"touch {m}"),
    "subprocess.call": lambda m: Call(subprocess.call, ["touch", str(m)]),
    "subprocess.check_output": lambda m: Call(subprocess.check_output, ["touch", str(m)]),
    "subprocess.Popen": lambda m: Call(subprocess.Popen, ["touch", str(m)]),
    "builtins.eval": lambda m: Call(builtins.eval, _python(m)),
    "builtins.exec": lambda m: Call(builtins.exec, _python(m)),
    "builtins.open": lambda m: Call(builtins.open, str(m), "w"),
    "builtins.__import__+getattr": lambda m: Call(
        _attr(Call(builtins.__import__, "os"), "system"), f"touch {m}"
    ),
    "shutil.copyfile": lambda m: Call(shutil.copyfile, os.devnull, str(m)),
    "importlib.import_module+getattr": lambda m: Call(_attr(_import("os"), "system"), f"touch {m}"),
    "getattr-chain": lambda m: Call(
        _attr(_attr(_import("subprocess"), "os"), "system"), f"touch {m}"
    ),
    "operator.attrgetter": lambda m: Call(
        Call(operator.attrgetter("system"), _import("os")), f"touch {m}"
    ),
    "operator.methodcaller": lambda m: Call(
        operator.methodcaller("system", f"touch {m}"), _import("os")
    ),
    "functools.partial": lambda m: Call(functools.partial(os.system, f"touch {m}")),
    "functools.reduce": lambda m: Call(functools.reduce, builtins.exec, [_python(m), {}]),
    "pkgutil.resolve_name": lambda m: Call(Call(pkgutil.resolve_name, "os:system"), f"touch {m}"),
    "pydoc.locate": lambda m: Call(Call(pydoc.locate, "os.system"), f"touch {m}"),
    "runpy.run_path": lambda m: Call(runpy.run_path, str(_script(m))),
    "code.InteractiveInterpreter": lambda m: Call(
        _attr(Call(code.InteractiveInterpreter), "runsource"), _python(m)
    ),
    "timeit.timeit": lambda m: Call(timeit.timeit, _python(m), "pass", time.perf_counter, 1),
    "cProfile.run": lambda m: Call(cProfile.run, _python(m)),
    "profile.run": lambda m: Call(profile.run, _python(m)),
    "pdb.run": lambda m: Call(pdb.run, _python(m)),
    "sys.modules-lookup": lambda m: Call(
        _attr(Call(dict.get, _attr(_import("sys"), "modules"), "os"), "system"), f"touch {m}"
    ),
    "numpy.testing.runstring": lambda m: Call(_numpy_runstring(), _python(m), {}),
    # a harmless-looking allowed class wrapping a disallowed callable
    "allowed-container-of-evil": lambda m: {"ok": [1, 2, 3], "x": Call(os.system, f"touch {m}")},
}


def _numpy_runstring() -> Any:
    from numpy.testing._private import utils

    return utils.runstring


def reduce_payload(name: str, marker: Path, protocol: int) -> bytes:
    """The pickle (at ``protocol``) of payload ``name`` aimed at ``marker``."""
    import pickle

    return pickle.dumps(REDUCE_PAYLOADS[name](marker), protocol=protocol)


# -- hand-assembled streams (opcodes a pickler would not write) ------------------------------------


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def memo_stack_global(marker: Path) -> bytes:
    """STACK_GLOBAL whose names come from the memo after decoy strings (fooled naive scans)."""
    cmd = f"touch {marker}".encode()
    return (
        b"\x80\x04"
        + _unicode("posix")
        + b"\x94"  # memo 0
        + _unicode("system")
        + b"\x94"  # memo 1
        + b"00"
        + _unicode("builtins")
        + _unicode("len")
        + b"00"
        + b"h\x00h\x01\x93"  # BINGET 0, BINGET 1, STACK_GLOBAL
        + b"X"
        + len(cmd).to_bytes(4, "little")
        + cmd
        + b"\x85R."
    )


def global_opcode(marker: Path) -> bytes:
    """Protocol 0 text GLOBAL written by hand."""
    return b"cposix\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."


def inst_opcode(marker: Path) -> bytes:
    """INST: import and call in one opcode (no Python 3 pickler writes it)."""
    return b"(V" + f"touch {marker}".encode() + b"\niposix\nsystem\n."


def obj_opcode(marker: Path) -> bytes:
    return b"(cposix\nsystem\nV" + f"touch {marker}".encode() + b"\no."


def ext_opcode(marker: Path) -> bytes:
    """EXT1: a global looked up in copyreg's extension registry."""
    del marker
    return b"\x80\x02\x82\x01)R."


def computed_stack_global(marker: Path) -> bytes:
    """STACK_GLOBAL on names produced by a call, not plain strings."""
    cmd = f"touch {marker}".encode()
    return (
        b"\x80\x04"
        + _unicode("builtins")
        + _unicode("str")
        + b"\x93"
        + _unicode("posix")
        + b"\x85R"
        + _unicode("system")
        + b"\x93"
        + b"X"
        + len(cmd).to_bytes(4, "little")
        + cmd
        + b"\x85R."
    )


def after_stop(marker: Path) -> bytes:
    """A harmless pickle followed by a second, evil one (a second load would run it)."""
    import pickle

    return pickle.dumps([1, 2], protocol=4) + reduce_payload("os.system", marker, 4)


def reconstructor_with_evil_base(marker: Path) -> bytes:
    """copyreg._reconstructor(cls, base, state) with base=Popen runs Popen.__init__(state)."""
    import copyreg
    import pickle

    return pickle.dumps(
        Call(copyreg._reconstructor, subprocess.Popen, subprocess.Popen, ["touch", str(marker)]),  # type: ignore[attr-defined]
        protocol=2,
    )


def codecs_bomb(marker: Path) -> bytes:
    """_codecs.encode with a non-latin1 codec (zlib_codec) instead of bytes data."""
    import _codecs
    import pickle

    del marker
    return pickle.dumps(Call(_codecs.encode, b"x" * 10, "zlib_codec"), protocol=2)


HAND_BUILT: dict[str, Callable[[Path], bytes]] = {
    "memo-STACK_GLOBAL": memo_stack_global,
    "GLOBAL-protocol-0": global_opcode,
    "INST": inst_opcode,
    "OBJ": obj_opcode,
    "EXT1": ext_opcode,
    "computed-STACK_GLOBAL": computed_stack_global,
    "payload-after-STOP": after_stop,
    "reconstructor-evil-base": reconstructor_with_evil_base,
    "codecs-non-latin1": codecs_bomb,
}
# hand-built streams that do not run the marker under plain pickle either (they test a
# refusal rule, not a live payload)
NOT_LIVE = {
    "EXT1",
    "payload-after-STOP",
    "codecs-non-latin1",
    "pdb.run",  # the debugger stops at its prompt (stdin closed) before running anything
}


@dataclass(frozen=True)
class Evil:
    """An object whose pickle runs ``os.system`` - for embedding in containers."""

    marker: str

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return os.system, (f"touch {self.marker}",)


def liveness_script(payloads: dict[str, bytes]) -> str:
    """Python source that plain-unpickles each payload in turn and prints the ones whose
    marker appeared (run it in a subprocess: it *does* run the payloads)."""
    return (
        "import pickle, os, time\n"
        f"cases = {payloads!r}\n"
        "for name, (data, marker) in cases.items():\n"
        "    try:\n"
        "        pickle.loads(data)\n"
        "    except BaseException:\n"
        "        pass\n"
        "deadline = time.time() + 10\n"  # Popen-style payloads finish asynchronously
        "while time.time() < deadline:\n"
        "    if all(os.path.exists(m) for _d, m in cases.values()):\n"
        "        break\n"
        "    time.sleep(0.05)\n"
        "for name, (_data, marker) in cases.items():\n"
        "    if os.path.exists(marker):\n"
        "        print('RAN:' + name)\n"
    )


def recompute_payload(artifact: Path, file_name: str, data: bytes) -> None:
    """Replace a payload file of ``artifact`` and recompute its manifest entry (size, and the
    digest in the algorithm the entry names), dropping the seal: what an attacker who can
    write the folder but holds no key can do."""
    import json

    from persistkit.digests import hexdigest_of

    (artifact / file_name).write_bytes(data)
    manifest_path = artifact / "persistkit.json"
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["files"]:
        if entry["path"] == file_name:
            entry["size"] = len(data)
            algorithm = "blake3" if "blake3" in entry else "sha256"
            entry[algorithm] = hexdigest_of(algorithm, data)
    manifest.pop("seal", None)
    manifest_path.write_text(json.dumps(manifest))


def old_joblib_wrapper(filename: bytes) -> bytes:
    """The pickle opcodes of joblib < 0.10's ``NDArrayWrapper``, whose array lives in the
    companion ``.npy`` file ``filename`` beside the joblib file."""
    import struct

    return (
        b"cjoblib.numpy_pickle\nNDArrayWrapper\n)\x81}("
        b"X\x08\x00\x00\x00filenameX"
        + struct.pack("<I", len(filename))
        + filename
        + b"X\x08\x00\x00\x00subclasscnumpy\nndarray\n"
        b"X\n\x00\x00\x00allow_mmap\x89ub"
    )
