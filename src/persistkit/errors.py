"""Every error persistkit raises, as one class hierarchy.

Each message says what happened *and* what to do about it. The second part is held apart from
the message so each interface can say it in its own terms:

* ``hint`` (the ``hint=`` argument) is advice that holds everywhere ("check the path");
* ``remedies`` are the options that fix it, named in no interface's words (:class:`Trust`,
  :class:`Option`, :class:`ListModels`); :meth:`PersistkitError.hint_for` renders them for
  ``"python"`` (``trusted=[...]``, ``store=...``), ``"cli"`` (``--trust``, ``--store URL``) or
  ``"http"`` (what the operator of ``persistkit serve`` can do).

``exc.hint`` and ``str(exc)`` speak Python; the CLI and the server call ``hint_for``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Interface = Literal["python", "cli", "http"]
INTERFACES: tuple[Interface, ...] = ("python", "cli", "http")


class Remedy:
    """Something the user can do about an error, rendered by each interface in its terms."""

    def render(self, interface: Interface) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Trust(Remedy):
    """Trusting the artifact: only ``names`` (exact globals) where the interface can say so,
    else everything (which runs the file's code)."""

    names: tuple[str, ...] = ()

    def render(self, interface: Interface) -> str:
        if interface == "python":
            if self.names:
                listed = ", ".join(repr(n) for n in self.names[:20])
                return (
                    f"if you trust its source, pass trusted=[{listed}] or trusted=True "
                    "(that runs this file's code)"
                )
            return "if you trust its source, pass trusted=True (that runs this file's code)"
        where = (
            "run the command again with" if interface == "cli" else "start `persistkit serve` with"
        )
        if self.names:
            listed = " ".join(f"--trust {n}" for n in self.names[:20])
            return (
                f"if you trust its source, {where} {listed} (allows just those), or --trust "
                "alone (that runs its code); `persistkit scan` shows the full audit"
            )
        return f"if you trust its source, {where} --trust (that runs its code)"


# how each interface spells an option: Python keyword argument, CLI flag (value placeholder)
_OPTION_SPELLING: dict[str, tuple[str, str]] = {
    "store": ("store={value}", "--store {value}"),
    "force": ("force=True", "--force"),
    "new": ("new=True", "--new"),
}
_OPTION_PLACEHOLDER = {"store": ("'URL'", "URL")}


@dataclass(frozen=True)
class Option(Remedy):
    """Passing an option: ``key`` is one of ``store``, ``force``, ``new``; ``value`` an
    example value (``None``: a placeholder); ``purpose`` says what it does ("to pick another
    store")."""

    key: str
    value: str | None = None
    purpose: str = ""

    def spelled(self, interface: Interface) -> str:
        python, cli = _OPTION_SPELLING[self.key]
        placeholder = _OPTION_PLACEHOLDER.get(self.key, ("...", "..."))
        if interface == "python":
            value = repr(self.value) if self.value is not None else placeholder[0]
            return python.format(value=value)
        return cli.format(value=self.value if self.value is not None else placeholder[1])

    def render(self, interface: Interface) -> str:
        spelled = self.spelled(interface)
        if interface == "http":
            text = f"start `persistkit serve` with {spelled}"
        else:
            text = f"pass {spelled}"
        return f"{text} {self.purpose}".rstrip()


@dataclass(frozen=True)
class ListModels(Remedy):
    """Listing what a store holds: every model, or the versions of ``name``."""

    store_url: str | None = None
    name: str | None = None

    def render(self, interface: Interface) -> str:
        if interface == "python":
            opened = repr(self.store_url) if self.store_url else ""
            store = f"persistkit.Store({opened})"
            call = f".versions({self.name!r})" if self.name else ".list()"
            return f"{store}{call} lists {'its versions' if self.name else 'its models'}"
        command = "persistkit ls" + (f" {self.name}" if self.name else "")
        if self.store_url:
            command += f" --store {self.store_url}"
        what = "its versions" if self.name else "the models in the store"
        return f"`{command}` lists {what}"


@dataclass(frozen=True)
class Command(Remedy):
    """Running something: ``python`` is the call, ``cli`` the ``persistkit`` command line;
    ``purpose`` says what it does ("to set it"). The server's operator is told the command."""

    python: str
    cli: str
    purpose: str = ""

    def render(self, interface: Interface) -> str:
        said = self.python if interface == "python" else self.cli
        return f"`{said}` {self.purpose}".rstrip()


@dataclass(frozen=True)
class ImportCode(Remedy):
    """Making the model's own code (``module``, e.g. ``cnn`` for ``cnn.Net``) importable:
    Python imports from ``sys.path``; the command line also from ``--app-dir`` (default: the
    folder it runs in)."""

    module: str
    model_class: bool = False  # the backend can also be handed the class (load(model_class=))

    def render(self, interface: Interface) -> str:
        if interface == "python":
            also = ", or pass model_class=<the class> to load()" if self.model_class else ""
            return (
                f"make {self.module} importable (install its package, or put the folder that "
                f"holds {self.module}.py on sys.path){also}"
            )
        command = "the command" if interface == "cli" else "`persistkit serve`"
        return (
            f"run {command} in the folder that holds {self.module}.py, or pass "
            "--app-dir FOLDER (or install its package)"
        )


class PersistkitError(Exception):
    """Base class of every error raised by persistkit and its first-party plugins.

    ``hint`` is advice in no interface's terms; ``remedies`` are rendered by each interface
    (see the module's documentation). ``exc.hint`` is the whole hint as Python says it.
    """

    def __init__(
        self, message: str, *, hint: str | None = None, remedies: Sequence[Remedy] = ()
    ) -> None:
        self.message = message
        self.advice = hint
        self.remedies = tuple(remedies)
        self.hint = self.hint_for("python")
        text = self.hint
        super().__init__(f"{message}\n  hint: {text}" if text else message)

    def hint_for(self, interface: Interface) -> str | None:
        """The hint in ``interface``'s terms: the advice, then each remedy rendered."""
        parts = [self.advice] if self.advice else []
        parts += [remedy.render(interface) for remedy in self.remedies]
        text = ""
        for part in parts:
            text += ("" if not text else " " if text.endswith("?") else "; ") + part
        return text or None


class PersistkitWarning(UserWarning):
    """Base class of persistkit's warnings: something worked, but maybe not as you meant."""


def warn(warning: PersistkitWarning) -> None:
    """Issue ``warning`` pointing at the first caller outside persistkit and its plugins
    (whichever public call got here), so the line shown is the user's."""
    import sys
    import warnings

    level, frame = 1, sys._getframe(1)
    while frame is not None and _is_ours(frame.f_code.co_filename):
        level, frame = level + 1, frame.f_back  # type: ignore[assignment]
    warnings.warn(warning, stacklevel=level)


def _is_ours(filename: str) -> bool:
    marker = filename.replace("\\", "/")
    return "/persistkit/" in marker or "/persistkit_" in marker or "pluggy" in marker


class AmbiguousSourceWarning(PersistkitWarning):
    """A source named both a file (or folder) here and a model in the store; the message says
    which one was used and how to name the other."""


class EnvironmentMismatchWarning(PersistkitWarning):
    """The artifact was saved with other major or minor versions of libraries its payload
    needs than the ones running now; the message names saved and running versions."""


class DriftWarning(PersistkitWarning):
    """With other library versions than at save time, the model's predictions on its stored
    example differ from the ones stored (``load(..., strict=True)`` raises instead)."""


class PluginError(PersistkitError):
    """A plugin is broken or two plugins disagree (e.g. both declare the same backend)."""


class BackendNotFoundError(PersistkitError):
    """No installed plugin declares a backend of that name."""


class BackendUnavailableError(PersistkitError):
    """The backend is known but the library it needs is not installed."""


class CannotSaveError(PersistkitError):
    """The chosen backend cannot serialize this model."""


class NoAdapterError(PersistkitError):
    """No adapter knows how to predict with (or freeze) this kind of model."""


class NotFittedError(PersistkitError):
    """The model has not been trained yet, so saving it would keep nothing useful."""


class ArtifactError(PersistkitError):
    """An artifact is missing, malformed or inconsistent with its manifest."""


class ArtifactNotFoundError(ArtifactError):
    """Nothing exists at the given location or ref."""


class ManifestError(ArtifactError):
    """``persistkit.json`` is unreadable, invalid or of an unsupported format version."""


class IntegrityError(ArtifactError):
    """A payload file does not match the size or sha256 recorded in the manifest."""


class SealBrokenError(IntegrityError):
    """The manifest carries a seal of a key you trust, but was changed after it was sealed:
    someone edited it (its recorded hashes, backend, options ...). It is not loaded as
    yours; ``trusted=True`` loads it anyway, as a stranger's file."""


class FormatError(ArtifactError):
    """A payload file is truncated, corrupted or not in the format it claims."""


class LibraryRejectedError(FormatError):
    """A library's own code (a constructor, ``__setstate__``) refused what the payload holds:
    the file is damaged, or was written by other versions of that library. With other
    versions recorded, ``load`` raises :class:`IncompatibleEnvironmentError` instead."""


class UntrustedArtifactError(PersistkitError):
    """Loading would run code (import globals) that nobody has trusted.

    Its remedy is always :class:`Trust` (of ``globals_needed`` where known). A ``hint``
    passed without ``remedies`` is taken as written in Python's terms (``trusted=...``): it
    is the Python hint as given, and other interfaces say only the :class:`Trust` remedy.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        globals_needed: Iterable[str] = (),
        remedies: Sequence[Remedy] = (),
    ) -> None:
        self.globals_needed = sorted(set(globals_needed))
        self._python_hint = hint if not remedies else None
        if not remedies:
            remedies, hint = (Trust(tuple(self.globals_needed)),), None
        super().__init__(message, hint=hint, remedies=remedies)

    def hint_for(self, interface: Interface) -> str | None:
        python_hint = getattr(self, "_python_hint", None)
        if interface == "python" and python_hint:
            return python_hint
        return super().hint_for(interface)


class SigningKeyError(PersistkitError):
    """A signing key given to ``trust_key`` is malformed or too short."""


class RefError(PersistkitError):
    """A model name or ref is invalid (bad characters, too long, path tricks)."""


class StoreError(PersistkitError):
    """A store operation failed (conflict, missing version or alias, unreachable storage)."""


class VersionNotFoundError(StoreError, ArtifactNotFoundError):
    """The named model, version, alias or digest does not exist in the store."""


class QueryError(PersistkitError):
    """A ``--where`` or ``--sort`` clause (``store.find(where=, sort=)``) that cannot be read."""


class RecordError(PersistkitError):
    """``metrics=``, ``params=`` or ``lineage=`` given to ``save`` that cannot be recorded
    (a metric that is not a finite number, a key that is not a name, ...)."""


class VerificationError(PersistkitError):
    """Reloaded predictions differ from the ones stored with the example."""


def pip_install_line(requirements: dict[str, str]) -> str:
    """``pip install "a==1.2" ...`` pinning ``requirements``; Python itself is left out (it
    is compared, but not something pip installs). ``""`` when nothing is left to pin."""
    pins = " ".join(
        f'"{name}=={version}"'
        for name, version in requirements.items()
        if name.lower() != "python"
    )
    return f"pip install {pins}" if pins else ""


class IncompatibleEnvironmentError(ArtifactError):
    """The payload cannot be loaded with the library versions installed here (a module,
    class or attribute it needs is gone or changed). ``requirements`` maps each distribution
    to the version it was saved with; ``install_line`` is the exact ``pip install`` command
    that recreates that environment."""

    def __init__(
        self,
        message: str,
        *,
        requirements: dict[str, str] | None = None,
        hint: str | None = None,
        remedies: Sequence[Remedy] = (),
    ) -> None:
        self.requirements = dict(requirements or {})
        self.install_line = pip_install_line(self.requirements) or None
        if hint is None and self.install_line:
            hint = f"install the versions it was saved with: {self.install_line}"
        super().__init__(message, hint=hint, remedies=remedies)


class InputError(PersistkitError):
    """Inputs given to ``predict`` or ``serve`` do not match what the model expects."""


class RequestTooLargeError(InputError):
    """A request sent to ``persistkit serve`` is larger than the server accepts."""


class ModelNotServedError(PersistkitError):
    """The server has no model (or no version or alias) of that name loaded."""


class MissingExtraError(PersistkitError):
    """A feature needs an optional dependency that is not installed (the hint names the
    ``pip install "persistkit[EXTRA]"`` line)."""


class OptionError(InputError):
    """A keyword option given to ``save`` or ``load`` that the backend does not take there."""


class BatchError(PersistkitError):
    """A batch run (``predict_many``, ``persistkit predict --output``) cannot go on: its parts
    folder belongs to another run, there is nothing to resume, or the model changed under it."""


class EngineError(BatchError):
    """The engine a batch run asked for is unknown, not installed or cannot be reached."""


__all__ = [name for name in dir() if name.endswith("Error")] + [
    "INTERFACES",
    "AmbiguousSourceWarning",
    "Command",
    "PersistkitWarning",
    "Interface",
    "ListModels",
    "Option",
    "Remedy",
    "Trust",
]
