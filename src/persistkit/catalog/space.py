"""Where files live: a local folder or any fsspec file system, seen through small primitives.

A folder store keeps everything in its :class:`FileSpace`; a database-backed store keeps its
payloads in one (``blobs=``). Paths given to the primitives are relative to the space's root.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from persistkit import cache, config
from persistkit.errors import Option, PersistkitError, StoreError
from persistkit.manifest import Manifest
from persistkit.payload import open_payload
from persistkit.progress import Progress

STAGING = ".staging"
_MEMORY_CREATE_LOCK = threading.Lock()


class FileSpace:
    """A root on a file system: a local folder (``fs`` is None) or an fsspec URL.

    For S3 the endpoint and credentials come from the usual ``AWS_*`` environment variables
    (including ``AWS_ENDPOINT_URL``) or from ``storage_options`` (passed to s3fs).
    """

    def __init__(self, raw: str, storage_options: dict[str, Any] | None = None) -> None:
        raw = raw.removeprefix("file://")
        self.fs: Any = None
        if "://" not in raw:
            self.local_root = Path(raw).expanduser().absolute()
            self.url = str(self.local_root)
            self.root = self.url
            return
        protocol = raw.split("://", 1)[0]
        options = dict(storage_options or {})
        if protocol in ("s3", "s3a"):
            # other processes write to the same bucket: never answer from a stale listing
            options.setdefault("use_listings_cache", False)
        try:
            import fsspec

            self.fs, root = fsspec.core.url_to_fs(raw, **options)
        except ImportError as exc:
            raise StoreError(
                f"the {protocol}:// store needs the package {exc.name or 'for it'}",
                hint='pip install "persistkit[s3]"' if protocol.startswith("s3") else None,
            ) from None
        except ValueError as exc:
            raise StoreError(
                f"cannot open the store {hide_password(raw)}: {exc}",
                hint="use a folder, memory://..., or s3://bucket/prefix",
            ) from None
        self.local_root = Path()
        self.url = raw.rstrip("/")
        self.root = str(root).rstrip("/")

    @property
    def is_local(self) -> bool:
        return self.fs is None

    @property
    def is_memory(self) -> bool:
        return not self.is_local and "memory" in protocols(self.fs)

    def exists(self) -> bool:
        """A local folder that exists, a ``memory://`` root with something in it, or an S3
        bucket that exists (a prefix in it needs no creating)."""
        if self.is_local:
            return self.local_root.is_dir()
        if self.is_memory:
            return bool(self.fs.isdir(self.root or "/"))
        return bool(self.fs.exists(self.root.split("/", 1)[0]))

    def missing(self) -> StoreError:
        """The error for reading from a space that does not exist."""
        where = "bucket" if not self.is_local and not self.is_memory else ""
        return StoreError(
            f"no store at {self.url}" + (f" (the {where} does not exist)" if where else ""),
            hint="check the location; a store is made by the first save into it",
            remedies=[Option("store", purpose="to name another store")],
        )

    def staging_parent(self) -> Path:
        """The local folder staged versions are written in (beside a local root, so the
        final rename is atomic; else in the per-user cache)."""
        return self.local_root / STAGING if self.is_local else config.cache_dir() / STAGING

    # -- primitives (paths relative to the root) -------------------------------------------
    def path(self, rel: str) -> str:
        if not rel:
            return self.root
        return f"{self.root}/{rel}" if self.root else rel

    def rel(self, full: str) -> str:
        return full[len(self.root) :].lstrip("/") if self.root else full.lstrip("/")

    def location(self, rel: str) -> str:
        """Where ``rel`` is, for messages: a local path or the URL plus ``rel``."""
        return str(self.local_root / rel) if self.is_local else f"{self.url}/{rel}"

    def find(self, rel: str) -> dict[str, Any]:
        """Every file under ``rel`` (relative path -> the file system's details)."""
        try:
            found = self.fs.find(self.path(rel) if rel else (self.root or "/"), detail=True)
        except FileNotFoundError:
            self.check_bucket()
            return {}
        return {self.rel(k): v for k, v in found.items()}

    def read(self, rel: str) -> bytes | None:
        if self.is_local:
            try:  # a regular file only: a link or FIFO planted in the store is refused
                with open_payload(self.local_root / rel) as opened:
                    return opened.read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                return None
        try:
            return bytes(self.fs.cat_file(self.path(rel)))
        except FileNotFoundError:
            return None

    def read_many(self, rels: builtins.list[str]) -> dict[str, bytes]:
        if self.is_local or not rels:
            return {rel: data for rel in rels if (data := self.read(rel)) is not None}
        blobs = self.fs.cat([self.path(r) for r in rels], on_error="omit")
        if not isinstance(blobs, dict):  # a single path answers with bare bytes
            blobs = {self.path(rels[0]): blobs}
        return {self.rel(k): bytes(v) for k, v in blobs.items() if isinstance(v, bytes)}

    def listdir(self, rel: str) -> builtins.list[str]:
        if self.is_local:
            folder = self.local_root / rel
            return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        try:
            return sorted(
                p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.path(rel), detail=False)
            )
        except FileNotFoundError:
            return []

    def modified(self, rel: str) -> float | None:
        """When ``rel`` (a file or folder) last changed, or None if it is gone."""
        if self.is_local:
            try:
                return (self.local_root / rel).stat().st_mtime
            except OSError:
                return None
        found = self.find(rel)
        return max((mtime(info) for info in found.values()), default=None)

    def replace(self, rel: str, data: bytes, *, durable: bool = False) -> None:
        """Write a small file so readers see the old or the new content, never a mix."""
        from persistkit.artifact import fsync_directory

        if not self.is_local:
            self.fs.pipe_file(self.path(rel), data)  # one PUT: atomic on object stores
            return
        final = self.local_root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, final)
        if durable:
            fsync_directory(final.parent)

    def create(self, rel: str, data: bytes) -> bool:
        """Create a file only if absent (a conditional write); False if it already exists."""
        try:
            if self.is_memory:
                # the in-process memory file system checks and creates in two steps
                with _MEMORY_CREATE_LOCK:
                    self.fs.pipe_file(self.path(rel), data, mode="create")
            else:
                self.fs.pipe_file(self.path(rel), data, mode="create")
        except FileExistsError:
            return False
        return True

    def remove(self, rel: str) -> None:
        if self.is_local:
            path = self.local_root / rel
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(rel), recursive=True)

    # -- payloads ----------------------------------------------------------------------------
    def upload(self, staging: Path, rel: str, manifest: Manifest, label: str) -> None:
        """Upload the payload files of a staged artifact under ``rel`` (remote spaces)."""
        prefix = self.path(rel)
        with Progress(f"upload {label}", manifest.total_size) as bar:
            for entry in manifest.files:
                self.fs.put_file(
                    str(staging / entry.path),
                    f"{prefix}/{entry.path}",
                    callback=cache._callback(bar),
                )

    def download(self, rel: str, manifest: Manifest, raw: bytes, digest: str) -> Path:
        """The local cache folder of the payload under ``rel`` (remote spaces)."""
        return cache.fetch(self.fs, self.path(rel), manifest, raw, digest)

    # -- errors ------------------------------------------------------------------------------
    def check_bucket(self) -> None:
        """On S3, raise a :class:`StoreError` naming the bucket if it does not exist."""
        if self.is_local or not {"s3", "s3a"} & set(protocols(self.fs)):
            return
        bucket = self.root.split("/", 1)[0]
        try:
            exists = bool(self.fs.exists(bucket))
        except Exception:  # the original error is the better one then
            return
        if not exists:
            endpoint = (
                getattr(self.fs, "endpoint_url", None)
                or (getattr(self.fs, "client_kwargs", None) or {}).get("endpoint_url")
                or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL")
                or "AWS S3"
            )
            raise StoreError(
                f"no bucket {bucket!r} at {endpoint} (or no access to it); create it first",
                hint=f"e.g. `aws s3 mb s3://{bucket}` (with --endpoint-url for another service), "
                "or check the store URL and the AWS_* settings",
            )

    @contextlib.contextmanager
    def errors(self, url: str | None = None) -> Iterator[None]:
        """Turn the storage library's errors into one :class:`StoreError` with a hint."""
        shown = url or self.url
        try:
            yield
        except PersistkitError:
            raise
        except PermissionError as exc:
            raise StoreError(
                f"permission denied in the store {shown}: {exc}",
                hint="check the folder's permissions or your credentials",
            ) from exc
        except Exception as exc:
            if not (isinstance(exc, OSError) or _from_storage_library(exc)):
                raise
            if isinstance(exc, FileNotFoundError):
                self.check_bucket()  # a missing bucket is named as such
            raise StoreError(
                f"the store {shown} failed: {type(exc).__name__}: {exc}",
                hint="check the URL, that the storage is reachable, and the AWS_* settings",
            ) from exc


def hide_password(raw: str) -> str:
    """``raw`` with the password of its ``user:password@`` part shown as ``***``, for
    messages (a URL that does not parse is shown as it is unless it has such a part)."""
    scheme, sep, rest = raw.partition("://")
    if not sep:
        return raw
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return raw
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"


def protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _from_storage_library(exc: BaseException) -> bool:
    module = type(exc).__module__.split(".")[0]
    return module in {"botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec", "urllib3"}


def mtime(info: dict[str, Any]) -> float:
    """The modification time in an fsspec file's details (now, if it has none)."""
    for key in ("LastModified", "mtime", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
    return time.time()
