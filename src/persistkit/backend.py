"""``Backend``: sugar for plugin authors who only want to write ``save`` and ``load``.

Subclass it, set ``info`` and ``file_name``, implement :meth:`save` and :meth:`load`, and
register an *instance* as your plugin. The hooks stay the protocol; this class implements them
for one backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from persistkit.errors import ArtifactError, CannotSaveError, FormatError, ImportCode
from persistkit.manager import hookimpl
from persistkit.manifest import Manifest
from persistkit.payload import PayloadFile, PayloadFiles, open_model_file
from persistkit.records import BackendInfo


class Backend:
    """One single-file backend. Override :meth:`can_save` and :meth:`sniff` as needed."""

    info: ClassVar[BackendInfo]
    file_name: ClassVar[str] = "model.bin"

    # -- what subclasses write ----------------------------------------------------------------
    def save(self, model: Any, path: Path, options: dict[str, Any]) -> None:
        """Write ``model`` to ``path`` (a new file in a local staging folder)."""
        raise NotImplementedError

    def save_with_example(
        self, model: Any, path: Path, options: dict[str, Any], example: Any
    ) -> None:
        """Write ``model`` to ``path`` given the user's ``example=`` batch (or ``None``).

        Backends that trace or convert the model override this; the default ignores the
        example and calls :meth:`save`.
        """
        self.save(model, path, options)

    def load(self, path: Path, manifest: Manifest, options: dict[str, Any], policy: Any) -> Any:
        """Read the model back from ``path``; untrusted payloads only through ``policy``."""
        raise NotImplementedError

    def load_payload(
        self, payload: PayloadFile, manifest: Manifest, options: dict[str, Any], policy: Any
    ) -> Any:
        """Read the model back from ``payload``, the opened and checked main file.

        Override this (read ``payload.read_bytes()``, ``payload.stream()`` or
        ``payload.bound_path()``) so that what loads is what was checked. The default calls
        :meth:`load` with the path, for backends written before files were opened once.
        """
        return self.load(payload.path, manifest, options, policy)

    def load_path(
        self, path: Path, manifest: Manifest, options: dict[str, Any], policy: Any
    ) -> Any:
        """:meth:`load_payload` for a file given by path (opened here, as a regular file)."""
        with open_model_file(path) as payload:
            result = self.load_payload(payload, manifest, options, policy)
            payload.ensure_unchanged()
            return result

    def can_save(self, model: Any) -> bool:
        """Cheap check used by automatic backend choice; the default says yes."""
        return True

    def sniff(self, path: Path, head: bytes) -> bool:
        """True if the bare file ``path`` is in this format; default: by ``info.suffixes``."""
        return path.name.lower().endswith(self.info.suffixes) if self.info.suffixes else False

    # -- the hooks ---------------------------------------------------------------------------
    @hookimpl
    def persistkit_backends(self) -> list[BackendInfo]:
        return [self.info]

    @hookimpl
    def persistkit_can_save(self, model: Any, backend: str) -> bool | None:
        return self.can_save(model) if backend == self.info.name else None

    @hookimpl
    def persistkit_save(
        self, model: Any, backend: str, directory: Path, options: dict[str, Any], example: Any
    ) -> list[str] | None:
        if backend != self.info.name:
            return None
        self.save_with_example(model, directory / self.file_name, options, example)
        return [self.file_name]

    @hookimpl(trylast=True)
    def persistkit_sniff(self, path: Path, head: bytes) -> str | None:
        return self.info.name if self.sniff(path, head) else None

    @hookimpl
    def persistkit_load(
        self,
        backend: str,
        directory: Path,
        manifest: Manifest,
        options: dict[str, Any],
        policy: Any,
        files: PayloadFiles | None,
    ) -> Any | None:
        if backend != self.info.name:
            return None
        if files is None:  # called by something other than persistkit's load
            return self.load_path(directory / manifest.primary_file, manifest, options, policy)
        return self.load_payload(files.primary, manifest, options, policy)


class PickleProtocolBackend(Backend):
    """A backend whose format is a pickle stream written by ``module.dump`` (pickle,
    cloudpickle, dill). Untrusted payloads load through the restricted unpickler."""

    module_name: ClassVar[str] = "pickle"
    file_name: ClassVar[str] = "model.pkl"

    def _module(self) -> Any:
        import importlib

        return importlib.import_module(self.module_name)

    def save(self, model: Any, path: Path, options: dict[str, Any]) -> None:
        protocol = int(options.get("protocol", 5))
        try:
            with open(path, "wb") as fh:
                self._module().dump(model, fh, protocol=protocol)
        except Exception as exc:
            if not _is_a(exc, _PICKLING_ERRORS, "PicklingError"):
                raise
            raise CannotSaveError(
                f"{self.info.name} cannot serialize this {type(model).__qualname__}: {exc}",
                hint=self.cannot_save_hint(),
            ) from None

    def cannot_save_hint(self) -> str:
        return 'try backend="cloudpickle" (pip install "persistkit[cloudpickle]")'

    def load(self, path: Path, manifest: Manifest, options: dict[str, Any], policy: Any) -> Any:
        return self.load_path(path, manifest, options, policy)

    def load_payload(
        self, payload: PayloadFile, manifest: Manifest, options: dict[str, Any], policy: Any
    ) -> Any:
        what = f"{self.info.name} payload"
        if not policy.trust_all:
            return policy.unpickle(payload.named_bytes(), what=what)
        if manifest.environment.get("persistkit"):
            # persistkit's own artifact, written by this backend's dump and hash-checked
            # through this descriptor: stream it (reading it whole first would double a
            # large model's time and memory)
            payload.ensure_unchanged()
            with payload.stream() as stream:
                return self._unpickle(self._module().load, stream, payload)
        source = payload.read_bytes()
        if _written_by_joblib(source):
            # a ".pkl" made by joblib.dump is common; decided from the bytes, not by retrying
            return policy.load_joblib_payload(payload)
        return self._unpickle(self._module().loads, source, payload)

    def _unpickle(self, unpickle: Any, source: Any, payload: PayloadFile) -> Any:
        try:
            return unpickle(source)
        except ModuleNotFoundError as exc:  # the model's own code is not importable here
            module = (exc.name or "its module").split(".")[0]
            raise ArtifactError(
                f"{payload.name} needs the module {exc.name!r}, which cannot be imported here",
                remedies=(ImportCode(module),),
            ) from None
        except Exception as exc:
            if not _is_a(exc, _UNPICKLING_ERRORS, "UnpicklingError"):
                raise
            raise FormatError(
                f"{payload.name} is not a readable {self.info.name} stream: "
                f"{type(exc).__name__}: {exc}",
                hint="the file is truncated or damaged; restore it or save the model again",
            ) from None


# what a pickler raises for an object it cannot store, and an unpickler for a damaged stream;
# pickle, cloudpickle and dill each have their own (Un)PicklingError class, matched by name
_PICKLING_ERRORS = (AttributeError, TypeError, ValueError, RecursionError)
_UNPICKLING_ERRORS = (EOFError, ValueError, IndexError, KeyError)


def _is_a(exc: Exception, kinds: tuple[type[Exception], ...], class_name: str) -> bool:
    return isinstance(exc, kinds) or type(exc).__name__ == class_name


_COMPRESSION_MAGIC = (b"\x78", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x04\x22\x4d\x18")


def _written_by_joblib(data: bytes) -> bool:
    """A joblib dump: compressed (joblib's compressors) or holding its array wrappers."""
    return data.startswith(_COMPRESSION_MAGIC) or b"joblib.numpy_pickle" in data
