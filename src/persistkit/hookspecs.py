# mypy: disable-error-code="empty-body"
"""The plugin protocol: every hook persistkit calls, in the order a save and a load call them.

Plugins implement these with ``@persistkit.hookimpl``. An implementation may accept fewer
arguments than the spec lists (pluggy passes only the ones it names), so new arguments can be
added without breaking old plugins. ``firstresult`` hooks stop at the first non-``None`` result;
built-in defaults are ``trylast`` so a third party can take over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy

from persistkit.records import BackendInfo, Recommendation

hookspec = pluggy.HookspecMarker("persistkit")

# --- registration -------------------------------------------------------------------------


@hookspec
def persistkit_backends() -> list[BackendInfo]:
    """Declare the backends (serialization formats) this plugin provides.

    Called once, when the plugin manager starts. Return a list of :class:`BackendInfo`.
    Declaring a name another plugin already declared is an error naming both plugins.
    ``BackendInfo.save_options``/``load_options`` name the keyword options the backend takes;
    ``save`` and ``load`` refuse any other (an :class:`persistkit.errors.OptionError`) before
    calling any hook; the hooks may still add entries of their own to ``options``.
    """


# --- choosing a backend -------------------------------------------------------------------


@hookspec
def persistkit_recommend(model: Any) -> list[Recommendation] | None:
    """Vote for the backends that suit ``model`` (adapters implement this).

    Called by ``save`` when ``backend=None``. Return :class:`Recommendation` records
    (higher score wins), or ``None``/``[]`` if the model is not this adapter's family.
    """


@hookspec(firstresult=True)
def persistkit_can_save(model: Any, backend: str) -> bool | None:
    """Say whether ``backend`` can serialize ``model`` without trying a full save.

    Called while choosing a backend automatically. Return ``None`` if ``backend`` is not this
    plugin's; stops at the first non-``None`` result.
    """


# --- save ---------------------------------------------------------------------------------


@hookspec(firstresult=True)
def persistkit_freeze(model: Any) -> Any | None:
    """Return an inference-ready version of ``model`` (eval mode, no gradients, checked fitted).

    Called by ``freeze``, by ``save`` (unless ``freeze=False``) and on every loaded model.
    Return ``None`` if the model is not this adapter's family; stops at the first non-``None``.
    """


@hookspec
def persistkit_describe(model: Any, backend: str | None) -> dict[str, Any] | None:
    """Return facts about ``model`` for the manifest.

    Called by ``save`` with the ``backend`` it writes with (``None`` when no save is under
    way), so a note can concern that format. Known keys: ``family`` (str), ``class`` (fully
    qualified name), ``libraries`` (``{distribution: version}``), ``notes`` (list of str);
    other keys are kept under ``model`` in the manifest. Results of all plugins are merged;
    return ``None`` if the model is not this adapter's family.
    """


@hookspec(firstresult=True)
def persistkit_save(
    model: Any, backend: str, directory: Path, options: dict[str, Any], example: Any
) -> list[str] | None:
    """Write ``model`` into the local, empty ``directory`` using format ``backend``.

    Called by ``save`` after freeze. ``example`` is the input batch the user passed as
    ``example=`` (a numpy array), or ``None``; backends that trace or convert the model
    (``BackendInfo.converts``) need it and always get one. ``options`` are the backend
    options the user passed; the hook may add or replace JSON-serialisable entries (e.g. what
    it needs to rebuild the model),
    and ``save`` records ``options`` in the manifest afterwards, so ``persistkit_load`` gets
    them back. Return the file names written (relative to ``directory``), or ``None`` if
    ``backend`` is not this plugin's; stops at the first non-``None`` result. Raise
    :class:`persistkit.errors.CannotSaveError` with a hint if the model cannot be saved.
    """


# --- load ---------------------------------------------------------------------------------


@hookspec(firstresult=True)
def persistkit_sniff(path: Path, head: bytes) -> str | None:
    """Name the backend that can read the bare file ``path`` (no manifest), or return ``None``.

    Called by ``load`` on a file made by another tool. ``head`` holds its first bytes.
    """


@hookspec(firstresult=True)
def persistkit_load(
    backend: str,
    directory: Path,
    manifest: Any,
    options: dict[str, Any],
    policy: Any,
    files: Any,
) -> Any | None:
    """Read the model back from the local ``directory`` written by ``persistkit_save``.

    Called by ``load`` after the manifest and every file's digest were checked. ``manifest`` is
    the :class:`persistkit.Manifest`; ``policy`` the :class:`persistkit.safety.TrustPolicy`
    in force. Backends that are not ``safe`` must load untrusted payloads only through
    ``policy`` (``policy.unpickle``). ``files`` (:class:`persistkit.payload.PayloadFiles`)
    holds every listed file, already opened as a regular file and checked: read from
    ``files[name]`` (its descriptor or bytes), not by opening the path again, or a file
    replaced after the check would load in its place. Return the model, or ``None`` if
    ``backend`` is not this plugin's; stops at the first non-``None`` result.
    """


@hookspec
def persistkit_folder_facts(backend: str, path: Path) -> dict[str, Any] | None:
    """Say what a model folder made by another tool declares as data, for its stand-in
    manifest: ``preprocess`` (how a picture becomes an input, in the keys of
    :mod:`persistkit.preprocess`; a Hugging Face ``preprocessor_config.json``).

    Called when such a folder (see ``persistkit_sniff``) is located, before anything loads,
    so ``predict`` reads pictures for it as for a persistkit artifact. Values are checked
    where they are used, like any manifest data. Return a dict, or ``None``; results of all
    plugins are merged.
    """


@hookspec
def persistkit_requirements(backend: str, manifest: Any, files: Any) -> dict[str, str] | None:
    """Name the distributions (and versions) a payload made by another tool needs, as far as
    it records them: an MLflow folder lists its pins, a pickle may carry library versions.

    Called by ``load`` for a bare file or a foreign folder (persistkit's own artifacts record
    theirs in the manifest), before the backend reads it; ``files`` are the opened
    :class:`persistkit.payload.PayloadFiles`. The versions are compared with the installed
    ones (a warning, and the ``pip install`` line of an
    :class:`persistkit.errors.IncompatibleEnvironmentError` if the load then fails). Return
    ``{distribution: version}``, or ``None``; results of all plugins are merged.
    """


# --- predict ------------------------------------------------------------------------------


@hookspec(firstresult=True)
def persistkit_predict(model: Any, inputs: Any, options: dict[str, Any]) -> Any | None:
    """Run inference: return the predictions of ``model`` for ``inputs`` (numpy-friendly).

    Called by ``predict`` and ``serve``. ``options`` may hold ``method`` (e.g.
    ``"predict_proba"``). Return ``None`` if the model is not this adapter's family; stops at
    the first non-``None`` result.
    """
