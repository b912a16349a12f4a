"""The environment a payload needs: recorded at save, compared with what runs at load.

At save, every distribution whose code the payload needs is recorded with its version: the
libraries the adapters name, and the distribution that owns each module the model's classes
come from (``transformers`` for a Hugging Face model, the user's own package), under
``environment["requirements"]`` in the manifest and as ``requirements.txt`` beside it.

At load, :func:`mismatches` compares those versions with the installed ones: a different major
or minor version (or a missing distribution) is a :class:`Mismatch`. The load warns once
(:class:`persistkit.errors.EnvironmentMismatchWarning`), and a load that then fails for a
reason the versions explain becomes :class:`persistkit.errors.IncompatibleEnvironmentError`
with the exact ``pip install`` line.

Bare files carry no manifest; :func:`carried_versions` reads what the file itself records
(scikit-learn writes ``_sklearn_version`` into every estimator's state).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from persistkit.manifest import REQUIREMENTS_FILE
from persistkit.values import Value

# top-level module -> distribution, where the names differ (checked before a full scan)
_KNOWN_OWNERS = {
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "cv2": "opencv-python",
    "yaml": "PyYAML",
    "skimage": "scikit-image",
}
# modules of the standard library and of Python itself need no distribution
_BUILTIN = frozenset({"builtins", "__main__", "copyreg", "collections", "_codecs", "functools"})


class Mismatch(Value):
    """One distribution whose running version differs from the recorded one."""

    _fields = ("distribution", "saved", "running")
    __slots__ = _fields
    distribution: str
    saved: str
    running: str | None  # None: not installed here

    def __init__(self, distribution: str, saved: str, running: str | None) -> None:
        self._set(distribution, saved, running)

    def __str__(self) -> str:
        running = "not installed" if self.running is None else f"running {self.running}"
        return f"{self.distribution} (saved with {self.saved}, {running})"


@functools.lru_cache(maxsize=1024)
def owner_of(module: str) -> str | None:
    """The installed distribution that provides the top-level package of ``module``, or
    ``None`` for the standard library, ``__main__`` and modules no distribution owns."""
    top = module.split(".", 1)[0]
    if not top or top in _BUILTIN or top in sys.stdlib_module_names:
        return None
    import importlib.metadata

    candidates = [_KNOWN_OWNERS.get(top, top), top.replace("_", "-")]
    for name in candidates:
        try:
            return importlib.metadata.distribution(name).metadata["Name"] or name
        except importlib.metadata.PackageNotFoundError:
            continue
    owners = _packages_distributions().get(top)
    return owners[0] if owners else None


@functools.cache
def _packages_distributions() -> Mapping[str, list[str]]:
    import importlib.metadata

    return importlib.metadata.packages_distributions()  # ~0.1 s: only for unusual names


#: a requirement on Python itself (MLflow records one): compared, never pip-installed
PYTHON = "python"


_FOUND_VERSIONS: dict[str, str] = {}


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (``"python"``: the interpreter's), or
    ``None`` when it is not installed. A version found is remembered for the process (a
    lookup costs ~0.5 ms per load otherwise); one not found is looked up again, so a
    ``pip install`` in a running notebook is seen."""
    if distribution.lower() == PYTHON:
        import platform

        return platform.python_version()
    found = _FOUND_VERSIONS.get(distribution)
    if found is not None:
        return found
    # remembered between processes until something is installed or removed (a first
    # lookup costs ~1 ms, plus ~10 ms to import importlib.metadata)
    from persistkit.discovery import installed_version as looked_up

    found = looked_up(distribution)
    if found is None:
        return None
    _FOUND_VERSIONS[distribution] = found
    return found


def _look_up_together(distributions: Iterable[str]) -> None:
    """Remember the versions of ``distributions`` not looked up yet in this process, with one
    check of the record kept between processes rather than one each."""
    wanted = [d for d in distributions if d.lower() != PYTHON and d not in _FOUND_VERSIONS]
    if len(wanted) < 2:
        return
    from persistkit.discovery import installed_versions

    for name, version in installed_versions(wanted).items():
        if version is not None:
            _FOUND_VERSIONS[name] = version


def requirements_for(modules: Iterable[str], libraries: Mapping[str, str]) -> dict[str, str]:
    """Distribution -> version for ``libraries`` (already versioned by the adapters) plus the
    owner of every module in ``modules`` (the model's classes), sorted by name."""
    found = {name: version for name, version in libraries.items() if version}
    for module in modules:
        owner = owner_of(module)
        if owner is not None and owner not in found:
            version = installed_version(owner)
            if version is not None:
                found[owner] = version
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def requirements_text(requirements: Mapping[str, str]) -> str:
    """``requirements.txt`` pinning each distribution, with a header saying where from."""
    lines = ["# the library versions this model was saved with (pip install -r requirements.txt)"]
    lines += [f"{name}=={version}" for name, version in requirements.items()]
    return "\n".join(lines) + "\n"


def write_requirements(directory: Path, requirements: Mapping[str, str]) -> str:
    (directory / REQUIREMENTS_FILE).write_text(requirements_text(requirements))
    return REQUIREMENTS_FILE


def recorded(environment: Mapping[str, object]) -> dict[str, str]:
    """The versions a manifest's ``environment`` records: ``requirements`` (this release)
    or, for older artifacts, ``libraries``. Values that are not strings are ignored (the
    manifest is untrusted input)."""
    for key in ("requirements", "libraries"):
        value = environment.get(key)
        if isinstance(value, dict) and value:
            return {str(k): v for k, v in value.items() if isinstance(v, str)}
    return {}


def mismatches(requirements: Mapping[str, str]) -> list[Mismatch]:
    """Each recorded distribution whose installed major.minor version differs, or that is
    not installed. Patch releases are assumed compatible; local build tags (``+cpu``) and
    pre-release markers are ignored."""
    _look_up_together(requirements)
    found = []
    for name, saved in requirements.items():
        running = installed_version(name)
        if running is None or _major_minor(running) != _major_minor(saved):
            found.append(Mismatch(name, saved, running))
    return found


def _major_minor(version: str) -> tuple[str, ...]:
    """``("2", "0")`` for ``2.0.1``, ``2.0rc1``, ``2.0.0+cpu``: release numbers only."""
    # read with str methods: compiling a pattern here cost ~0.2 ms of every first load
    text = version.lstrip()
    text = text[1:] if text.startswith("v") else text
    major = _leading_digits(text)
    if not major:
        return (version.strip(),)
    rest = text[len(major) :]
    minor = _leading_digits(rest[1:]) if rest.startswith(".") else ""
    return (major, minor or "0")


def _leading_digits(text: str) -> str:
    end = 0
    while end < len(text) and text[end].isdecimal():
        end += 1
    return text[:end]


def describe(found: Iterable[Mismatch]) -> str:
    return ", ".join(str(m) for m in found)


# --- what a bare file carries ---------------------------------------------------------------

# scikit-learn's __getstate__ adds "_sklearn_version": "1.3.2" to every estimator's state;
# in a pickle that is the key, an optional MEMOIZE, then a SHORT_BINUNICODE (or BINUNICODE)
_SKLEARN_VERSION = rb"_sklearn_version(?:\x94|q.|r....)?(?:\x8c(.)|X(....))"


def carried_versions(data: bytes) -> dict[str, str]:
    """The library versions a bare pickle or joblib file records about itself (so far:
    scikit-learn's ``_sklearn_version``); compressed joblib files are decompressed first."""
    from persistkit.errors import PersistkitError
    from persistkit.safety import TrustPolicy
    from persistkit.safety.joblib_reader import compression_of, decompress

    method = compression_of(data[:16])
    if method is not None:
        try:  # under the same size and ratio caps as a load
            data = decompress(data, method, TrustPolicy(), what="file")
        except PersistkitError:  # a damaged file: the load itself reports it
            return {}
    return _versions_in(data)


def carried_versions_mapped(fd: int, size: int) -> dict[str, str] | None:
    """:func:`carried_versions` of an opened file without reading it into memory (a
    read-only map is searched); ``None`` for a compressed file, whose versions would cost a
    decompression (the load reports them as the library warns of them instead)."""
    import mmap

    from persistkit.safety.joblib_reader import compression_of

    if size == 0:
        return {}
    if compression_of(os.pread(fd, 16, 0)) is not None:
        return None
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
        return _versions_in(mapped)


def _versions_in(data: Any) -> dict[str, str]:
    # compiled here, not at import: only bare files are scanned (``re`` caches it)
    for match in re.finditer(_SKLEARN_VERSION, data, re.DOTALL):
        start = match.end()
        short, long = match.group(1), match.group(2)
        length = short[0] if short is not None else int.from_bytes(long, "little")
        text = data[start : start + min(length, 32)]
        if re.fullmatch(rb"\d+\.\d+(\.\d+)?[\w.+-]*", text):
            return {"scikit-learn": text.decode("ascii")}
    return {}


def install_line(found: Iterable[Mismatch]) -> str:
    """The ``pip install`` line that brings back the versions ``found`` were saved with."""
    from persistkit.errors import pip_install_line

    return pip_install_line({m.distribution: m.saved for m in found})


# --- at load ----------------------------------------------------------------------------------

#: top-level packages of libraries whose modules may be imported to tell "this name is gone
#: in the installed version" from "this name is not trusted" (their code is installed here
#: and trusted; a stranger's module is never imported to find out)
LIBRARY_PACKAGES = ("sklearn", "numpy", "scipy", "torch", "joblib", "transformers")


def warn_mismatches(uri: str, found: list[Mismatch]) -> None:
    """One :class:`EnvironmentMismatchWarning` naming every mismatch."""
    from persistkit.errors import EnvironmentMismatchWarning, warn

    if found:
        warn(
            EnvironmentMismatchWarning(
                f"{uri} was saved with other library versions than the ones running here: "
                f"{describe(found)}; its predictions may differ (pin them with "
                f"{install_line(found)})"
            )
        )


def missing_library_names(names: Iterable[str]) -> list[str]:
    """The dotted ``module.Qualname`` globals that do not exist here: in a trusted library
    (:data:`LIBRARY_PACKAGES`), a module or attribute gone or moved since the file was made;
    elsewhere, a top-level module no installed package provides at all (scikit-learn < 1.8
    pickled its Cython losses as ``_loss.*``).

    Nothing is imported to find out (the names come from an untrusted file): an attribute
    is looked up statically on a module already imported, a module by ``find_spec`` only
    where its parent package is already imported. A name that cannot be decided this way
    is not reported."""
    import inspect

    gone = []
    for name in names:
        module, _, qualname = name.rpartition(".")
        parts = module.split(".")
        if not module or any(p.startswith("__") or not p.isidentifier() for p in parts):
            continue
        top = parts[0]
        if top not in LIBRARY_PACKAGES:
            if len(parts) == 1 and _no_such_module(top):
                gone.append(name)
            continue
        loaded = sys.modules.get(module)
        if loaded is None:
            if _submodule_missing(module):
                gone.append(name)
            continue
        target: object = loaded
        for part in qualname.split("."):
            target = inspect.getattr_static(target, part, _ABSENT)
            if target is _ABSENT:
                gone.append(name)
                break
    return gone


_ABSENT = object()


def _submodule_missing(module: str) -> bool:
    """True when ``module``'s parent package is imported and has no such submodule."""
    import importlib.util

    parent = module.rpartition(".")[0]
    if not parent or parent not in sys.modules:
        return False  # deciding would mean importing the parent
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def _no_such_module(top: str) -> bool:
    import importlib.util

    if top in sys.modules or top in sys.builtin_module_names:
        return False
    try:
        return importlib.util.find_spec(top) is None
    except (ImportError, ValueError):
        return True


def incompatible(
    uri: str, what: str, needed: Mapping[str, str], running_differs: Iterable[Mismatch]
) -> Exception:
    """The :class:`IncompatibleEnvironmentError` for a load that failed because of ``what``
    (one line), pinning ``needed`` (the versions the payload was made with)."""
    from persistkit.errors import IncompatibleEnvironmentError

    differ = list(running_differs)
    shown = f" ({describe(differ)})" if differ else ""
    return IncompatibleEnvironmentError(
        f"{uri} cannot be loaded with the library versions installed here{shown}: {what}",
        requirements=dict(needed),
    )


@contextlib.contextmanager
def library_version_warnings(uri: str, *, warned: bool) -> Iterator[None]:
    """Around the load of a bare file: scikit-learn warns once per estimator when it
    unpickles one made by another version (``InconsistentVersionWarning``); those become one
    :class:`EnvironmentMismatchWarning` (none if the versions the file carries were already
    told, ``warned``). Other warnings pass through unchanged."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            versions: dict[str, str] = {}
            others = []
            for item in caught:
                original = getattr(item.message, "original_sklearn_version", None)
                if type(item.message).__name__ == "InconsistentVersionWarning" and original:
                    versions["scikit-learn"] = str(original)
                else:
                    others.append(item)
    for item in others:
        warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    if versions and not warned:
        warn_mismatches(uri, mismatches(versions))
