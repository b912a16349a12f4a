"""Where a model came from: its data and its code, recorded at save (``save(lineage=)``).

The data is what the user says: ``lineage={"data": persistkit.data_digest("train.csv")}``,
or several entries, each a text or a small mapping (``{"data": {"digest": ...,
"source": "s3://..."}}``). The code is found alone: when the script that saves (or, from a
notebook, a shell or an installed tool such as ``pytest``, the current folder) lies in a git
checkout, ``lineage["git"]`` records

    commit   the checked-out commit (full hex)
    branch   the branch checked out (absent when HEAD is detached)
    dirty    whether tracked files differ from that commit (None when git could not tell)
    remote   the URL of the remote "origin" (else the first remote), without credentials
    path     the script's path relative to the checkout (absent from a notebook or shell)

The commit, branch and remote are read from the ``.git`` files themselves (no subprocess);
only ``dirty`` asks git (``git status``, bounded by a timeout), once per checkout and commit
in a process. A missing or broken git never fails a save: the record just has less in it.
``lineage={"git": {...}}`` replaces the found record (a CI job that builds without
``.git`` can pass its own commit); ``lineage=False`` records nothing automatically.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from persistkit.errors import RecordError, RefError
from persistkit.refs import KEY_RULE, validate_key
from persistkit.training import MAX_TEXT, checked_params

GIT_TIMEOUT_S = 3.0
_HEX40 = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")  # sha1 or sha256 object names
_GIT_KEYS = ("commit", "branch", "dirty", "remote", "path")
_dirty_cache: dict[tuple[str, str], bool | None] = {}


def recorded_lineage(lineage: Mapping[str, Any] | bool | None) -> dict[str, Any]:
    """The ``lineage`` record a save writes: the user's entries, checked, plus ``git``
    found from the saving script unless given or ``lineage=False``."""
    if lineage is False:
        return {}
    if lineage is None or lineage is True:
        lineage = {}
    if not isinstance(lineage, Mapping):
        raise RecordError(
            f"lineage= must be a mapping, not {type(lineage).__name__}",
            hint="e.g. lineage={'data': persistkit.data_digest('train.csv')}; "
            "lineage=False records nothing",
        )
    record = {key: _entry(key, value) for key, value in lineage.items()}
    if "git" not in record:
        try:
            found = git_lineage(script_path())
        except Exception:  # a checkout in a state this reader does not know: record less
            found = None  # (the code lineage is a courtesy; it never fails a save)
        if found:
            record["git"] = found
    elif record["git"] is None:
        del record["git"]  # lineage={"git": None}: the user turned it off
    return record


def _entry(key: str, value: Any) -> Any:
    try:
        validate_key(key, what="key in lineage=")
    except RefError as exc:
        raise RecordError(exc.message, hint=KEY_RULE) from None
    if key == "git" and value is None:
        return None
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise RecordError(
                f"lineage {key!r} is {len(value)} characters long (at most {MAX_TEXT})",
                hint="record a digest or a URL of the data, not the data",
            )
        return value
    if isinstance(value, Mapping):
        try:
            return checked_params(value)  # one level of named JSON scalars
        except RecordError as exc:
            raise RecordError(f"lineage {key!r}: {exc.message}", hint=exc.advice) from None
    raise RecordError(
        f"lineage {key!r} is a {type(value).__name__}, not text or a mapping of scalars",
        hint="e.g. lineage={'data': persistkit.data_digest(X_train)} or "
        "{'data': {'digest': ..., 'source': 's3://bucket/train.csv'}}",
    )


# --- the data ------------------------------------------------------------------------------


def data_digest(data: Any) -> str:
    """``sha256:<hex>`` identifying a data set, for ``lineage={"data": ...}``.

    ``data`` is a file or folder path (a folder: every file under it, by relative path and
    content, links to folders not followed), ``bytes``, or an array (a numpy array, or
    anything ``numpy.asarray`` takes: dtype, shape and values count, memory layout does not).
    The same data gives the same digest on every machine.
    """
    if isinstance(data, (str, os.PathLike)):
        return _path_digest(Path(os.fspath(data)).expanduser())
    if isinstance(data, (bytes, bytearray, memoryview)):
        return "sha256:" + hashlib.sha256(data).hexdigest()
    import numpy as np

    array = np.asarray(data)
    if array.dtype.hasobject:
        raise RecordError(
            "data_digest() cannot hash an array of Python objects",
            hint="hash the file the data came from, or a numeric array of it",
        )
    array = np.ascontiguousarray(array)
    h = hashlib.sha256(f"array {array.dtype.str} {list(array.shape)}\n".encode())
    h.update(array.data)
    return "sha256:" + h.hexdigest()


def _path_digest(path: Path) -> str:
    if path.is_file():
        return "sha256:" + _file_sha256(path).hex()
    if not path.is_dir():
        raise RecordError(
            f"data_digest(): no such file or folder: {path}",
            hint="give the path of the data file or folder, or the data itself",
        )
    h = hashlib.sha256(b"folder\n")
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = Path(root) / name
            rel = full.relative_to(path).as_posix()
            h.update(rel.encode("utf-8", "surrogateescape") + b"\0" + _file_sha256(full))
    return "sha256:" + h.hexdigest()


def _file_sha256(path: Path) -> bytes:
    """The sha256 of a regular file (a link to one is followed); a FIFO, socket, device or
    dangling link is a :class:`RecordError` (opening a FIFO would wait for a writer)."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise RecordError(
            f"data_digest(): cannot read {path}: {exc.strerror}",
            hint="remove the broken link or give a folder holding only data files",
        ) from None
    if not stat.S_ISREG(mode):
        raise RecordError(
            f"data_digest(): {path} is not a regular file (a FIFO, socket or device)",
            hint="give a folder holding only data files",
        )
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.digest()


# --- the code ------------------------------------------------------------------------------


def script_path() -> Path | None:
    """The file of the script that is running (``python train.py``, ``python -m pkg``), or
    ``None`` in a notebook, a shell, ``python -c``, or when the running program is an
    installed tool (``pytest``, ``persistkit convert``: a file of the Python installation
    or an environment), whose checkout is the current folder's."""
    main = sys.modules.get("__main__")
    file = getattr(main, "__file__", None)
    if not isinstance(file, str) or not file:
        return None
    path = Path(file).absolute()
    installed = {Path(p).absolute() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    if any(folder in installed for folder in path.parents):
        return None
    return path


def git_lineage(script: Path | None) -> dict[str, Any] | None:
    """The ``git`` record of the checkout holding ``script`` (or the current folder when it
    is ``None``), or ``None`` outside a checkout or before its first commit."""
    try:
        start = script.parent if script is not None else Path.cwd()
        found = _git_dirs(start)
        if found is None:
            return None
        top, git_dir, common = found
        head = _read_text(git_dir / "HEAD").strip()
        branch = head[len("ref: refs/heads/") :] if head.startswith("ref: refs/heads/") else None
        commit = _resolve_head(head, git_dir, common) or _git_output(top, "rev-parse", "HEAD")
        if not commit or not _HEX40.fullmatch(commit):
            return None  # no commit yet
    except OSError:
        return None
    record: dict[str, Any] = {"commit": commit}
    if branch:
        record["branch"] = branch
    record["dirty"] = _dirty(top, commit)
    remote = _remote_url(common)
    if remote:
        record["remote"] = remote
    if script is not None:
        # (not when a link from outside the checkout led to the script)
        with contextlib.suppress(ValueError):
            record["path"] = script.resolve().relative_to(top.resolve()).as_posix()
    return record


def _git_dirs(start: Path) -> tuple[Path, Path, Path] | None:
    """(work tree, git dir, common git dir) of the checkout holding ``start``."""
    for folder in (start, *start.parents):
        dot = folder / ".git"
        if dot.is_dir():
            git_dir = dot
        elif dot.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = _read_text(dot).strip()
            if not text.startswith("gitdir:"):
                return None
            git_dir = (folder / text[len("gitdir:") :].strip()).resolve()
        else:
            continue
        common = git_dir
        if (git_dir / "commondir").is_file():
            common = (git_dir / _read_text(git_dir / "commondir").strip()).resolve()
        return folder, git_dir, common
    return None


def _resolve_head(head: str, git_dir: Path, common: Path) -> str | None:
    """The commit HEAD names, from loose or packed refs (None when they cannot be read,
    e.g. a reftable repository)."""
    if not head.startswith("ref: "):
        return head
    ref = head[len("ref: ") :]
    for folder in (git_dir, common):
        try:
            return _read_text(folder / ref).strip()
        except OSError:
            continue
    try:
        packed = _read_text(common / "packed-refs")
    except OSError:
        return None
    for line in packed.splitlines():
        sha, _, name = line.partition(" ")
        if name == ref:
            return sha
    return None


def _remote_url(common: Path) -> str | None:
    """The URL of remote "origin" (else the first remote) in the git config, credentials
    removed (``https://user:token@host/x`` -> ``https://host/x``)."""
    try:
        config = _read_text(common / "config")
    except OSError:
        return None
    urls: dict[str, str] = {}
    section = None
    for raw in config.splitlines():
        line = raw.strip()
        match = re.match(r'^\[remote\s+"(.*)"\]', line)
        if match:
            section = match.group(1)
        elif line.startswith("["):
            section = None
        elif section is not None and re.match(r"^url\s*=", line):
            urls.setdefault(section, _config_value(line.split("=", 1)[1]))
    url = urls.get("origin") or next(iter(urls.values()), None)
    if url is None:
        return None
    return _without_credentials(url)


def _config_value(raw: str) -> str:
    """A git config value as git reads it: quotes removed (git writes a value holding ``#``
    or ``;`` in quotes), backslash escapes read, a comment after it dropped."""
    value, quoted, chars = [], False, iter(raw.strip())
    for char in chars:
        if char == "\\":
            escaped = next(chars, "")
            value.append({"n": "\n", "t": "\t", "b": "\b"}.get(escaped, escaped))
        elif char == '"':
            quoted = not quoted
        elif char in "#;" and not quoted:
            break
        else:
            value.append(char)
    return "".join(value).strip()


def _without_credentials(url: str) -> str:
    """``url`` without the user and password of its authority (``https://user:tok@host/x``
    -> ``https://host/x``); the authority ends at the first ``/``, and its host follows the
    last ``@`` (a password may hold one)."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/]*)(.*)$", url, re.DOTALL)
    if match is None:
        return url
    scheme, authority, rest = match.groups()
    return scheme + authority.rpartition("@")[2] + rest


def _dirty(top: Path, commit: str) -> bool | None:
    """Whether tracked files differ from ``commit`` (asked of git once per checkout and
    commit in this process: the code a run imported does not change under it)."""
    key = (str(top), commit)
    if key not in _dirty_cache:
        status = _git_output(top, "status", "--porcelain", "--untracked-files=no")
        _dirty_cache[key] = None if status is None else bool(status.strip())
    return _dirty_cache[key]


def _git_output(top: Path, *args: str) -> str | None:
    """``git -C top ARGS`` stdout, or None when git is missing, fails or takes too long."""
    import subprocess

    try:
        done = subprocess.run(
            # no optional locks: never contend with the user's own git commands; no
            # fsmonitor: a command named in a checkout's config is not run by a save
            ["git", "--no-optional-locks", "-c", "core.fsmonitor=false", "-C", str(top), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _read_text(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read(1 << 20)
