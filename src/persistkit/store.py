"""A store: named, versioned artifacts under one root folder.

Layout: ``<root>/<name>/<version>/persistkit.json`` plus payload. A version becomes visible
only when complete: it is staged in a hidden folder, its manifest written last, then renamed
into place (an atomic rename that fails if the version already exists, so two writers never
share a version).
"""

from __future__ import annotations

import builtins
import errno
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from persistkit import config
from persistkit.artifact import fsync_directory, fsync_tree, staging_directory, write_manifest
from persistkit.errors import StoreError, VersionNotFoundError
from persistkit.manifest import MANIFEST_NAME, Manifest, read_manifest
from persistkit.records import Artifact
from persistkit.refs import Ref, parse_ref, validate_name

_STAGING = ".staging"


class Store:
    """Named, versioned models in a folder (the per-user default, or ``$PERSISTKIT_STORE``)."""

    def __init__(self, url: str | os.PathLike[str] | None = None) -> None:
        raw = config.default_store_url() if url is None else os.fspath(url)
        if raw.startswith("file://"):
            raw = raw[len("file://") :]
        if "://" in raw:
            raise StoreError(
                f"remote stores ({raw.split('://')[0]}://) are not supported yet",
                hint="use a local folder",
            )
        self.root = Path(raw).expanduser().absolute()
        self.url = str(self.root)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- saving ----------------------------------------------------------------------------
    def save(self, model: Any, name: str | None = None, **save_options: Any) -> Artifact:
        """Save ``model`` as a new version of ``name``; same options as ``persistkit.save``."""
        from persistkit.api import save

        if name is not None:
            validate_name(name)
        return save(model, name, store=self, **save_options)

    def stage(self, name: str) -> Path:
        """A local, empty folder to write a new version of ``name`` into."""
        validate_name(name)
        return staging_directory(self.root / _STAGING, name)

    def publish(
        self, staging: Path, name: str, manifest: Manifest, *, durable: bool = False
    ) -> Artifact:
        """Give the staged artifact the next free version of ``name`` and make it visible."""
        folder = self.root / validate_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        version = max(self._version_numbers(name), default=0) + 1
        while True:
            manifest = replace(manifest, name=name, version=version)
            write_manifest(staging, manifest, durable=durable)
            if durable:
                fsync_tree(staging)
            try:
                os.rename(staging, folder / str(version))
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    version += 1
                    continue
                shutil.rmtree(staging, ignore_errors=True)
                raise StoreError(f"could not publish {name}:{version}: {exc}") from exc
            if durable:
                fsync_directory(folder)
            path = folder / str(version)
            return Artifact(
                uri=f"{name}:{version}", path=path, manifest=manifest, name=name, version=version
            )

    # -- reading ---------------------------------------------------------------------------
    def load(self, ref: str, **load_options: Any) -> Any:
        from persistkit.api import load

        return load(ref, store=self, **load_options)

    def list(self) -> builtins.list[str]:
        """Names with at least one complete version."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and self._version_numbers(p.name)
        )

    def versions(self, name: str) -> builtins.list[Manifest]:
        """Manifests of every complete version of ``name``, oldest first."""
        validate_name(name)
        return [read_manifest(self.root / name / str(v)) for v in self._version_numbers(name)]

    def resolve(self, ref: str | Ref) -> tuple[str, int]:
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        numbers = self._version_numbers(parsed.name)
        if not numbers:
            raise VersionNotFoundError(
                f"no model named {parsed.name!r} in the store {self.url}",
                hint="`persistkit ls` lists the models in a store; --store picks another",
            )
        if parsed.version is not None:
            if parsed.version not in numbers:
                raise VersionNotFoundError(
                    f"{parsed.name} has no version {parsed.version} (it has {_ranges(numbers)})",
                    hint=f"`persistkit ls {parsed.name}` lists its versions",
                )
            return parsed.name, parsed.version
        if parsed.alias is not None or parsed.digest is not None:
            raise StoreError(
                "aliases and digests need the full store, which is not implemented yet",
                hint="use name or name:VERSION",
            )
        return parsed.name, numbers[-1]

    def fetch(self, ref: str | Ref) -> tuple[Path, Manifest, str, int]:
        """The local folder and manifest of the version ``ref`` points at."""
        name, version = self.resolve(ref)
        path = self.root / name / str(version)
        return path, read_manifest(path), name, version

    def _version_numbers(self, name: str) -> builtins.list[int]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(
            int(p.name)
            for p in folder.iterdir()
            if p.name.isdigit() and (p / MANIFEST_NAME).is_file()
        )


def _ranges(numbers: builtins.list[int]) -> str:
    if len(numbers) == 1:
        return f"version {numbers[0]}"
    return f"versions {numbers[0]}-{numbers[-1]}"
