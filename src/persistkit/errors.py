"""Every error persistkit raises, as one class hierarchy.

Each message says what happened *and* what to do about it; ``hint`` holds the second part
separately so the CLI can print it on its own line.
"""

from __future__ import annotations

from collections.abc import Iterable


class PersistkitError(Exception):
    """Base class of every error raised by persistkit and its first-party plugins."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}\n  hint: {hint}" if hint else message)


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


class FormatError(ArtifactError):
    """A payload file is truncated, corrupted or not in the format it claims."""


class UntrustedArtifactError(PersistkitError):
    """Loading would run code (import globals) that nobody has trusted."""

    def __init__(
        self, message: str, *, hint: str | None = None, globals_needed: Iterable[str] = ()
    ) -> None:
        self.globals_needed = sorted(set(globals_needed))
        super().__init__(message, hint=hint)


class SigningKeyError(PersistkitError):
    """A signing key given to ``trust_key`` is malformed or too short."""


class RefError(PersistkitError):
    """A model name or ref is invalid (bad characters, too long, path tricks)."""


class StoreError(PersistkitError):
    """A store operation failed (conflict, missing version or alias, unreachable storage)."""


class VersionNotFoundError(StoreError, ArtifactNotFoundError):
    """The named model, version, alias or digest does not exist in the store."""


class VerificationError(PersistkitError):
    """Reloaded predictions differ from the ones stored with the example."""


class InputError(PersistkitError):
    """Inputs given to ``predict`` or ``serve`` do not match what the model expects."""


class RequestTooLargeError(InputError):
    """A request sent to ``persistkit serve`` is larger than the server accepts."""


class ModelNotServedError(PersistkitError):
    """The server has no model (or no version or alias) of that name loaded."""


class OptionError(InputError):
    """A keyword option given to ``save`` or ``load`` that the backend does not take there."""


__all__ = [name for name in dir() if name.endswith("Error")]
