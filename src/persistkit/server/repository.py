"""The models a server answers for: looked up by name and version or alias, loaded at
start-up, loaded and unloaded at runtime (the repository extension), and switched to a new
version when a followed alias moves in the store.

Readers never lock: the table of loaded models is replaced whole (copy on write), so a request
sees one consistent table and keeps the :class:`ServedModel` it looked up until it finishes,
even if that version is unloaded or replaced meanwhile. A new version is loaded completely
before it enters the table: nothing answers from a half-loaded model.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from persistkit.errors import ModelNotServedError, PersistkitError
from persistkit.manifest import Manifest
from persistkit.refs import Ref, normalise_name, parse_ref, validate_name
from persistkit.server import metrics
from persistkit.signature import OUTPUT_NAME, Signature, TensorSpec

#: the outputs a model saved with labels answers beside its own (see persistkit.answers)
LABEL_OUTPUT = "label"
SCORES_OUTPUT = "scores"
logger = logging.getLogger("persistkit.server")


@dataclass
class ServedModel:
    """One loaded model version with what the protocol needs to describe it.

    ``outputs`` and ``preprocess`` are the manifest's records, checked when the model loaded:
    what the outputs mean (labels) and how a picture becomes an input.
    """

    name: str
    version: int | None  # None for an artifact served from a path outside any store
    model: Any
    manifest: Manifest
    signature: Signature
    aliases: set[str] = field(default_factory=set)
    outputs: dict[str, Any] | None = None
    preprocess: dict[str, Any] | None = None
    in_store: bool = False  # loaded from the store by name (not from a path)

    @property
    def output_name(self) -> str:
        """The name of the model's own output."""
        return self.signature.output.name if self.signature.output else OUTPUT_NAME

    @property
    def answer_outputs(self) -> list[TensorSpec]:
        """``label`` (``BYTES``, one string per item) and ``scores`` (one probability per
        label, in the labels' order) when the manifest says what the outputs mean. A
        classifier without ``predict_proba`` has no scores; a name the model's own output
        already uses is left out."""
        if self.outputs is None:
            return []
        from persistkit.answers import scores_datatype

        specs = [TensorSpec(LABEL_OUTPUT, "BYTES", (-1,))]
        labels = self.outputs.get("labels")
        has_scores = self.outputs["kind"] != "labels" or hasattr(self.model, "predict_proba")
        if labels is not None and has_scores:
            raw = self.signature.output.datatype if self.signature.output else None
            datatype = scores_datatype(self.outputs, raw)
            specs.append(TensorSpec(SCORES_OUTPUT, datatype, (-1, len(labels))))
        return [spec for spec in specs if spec.name != self.output_name]

    @property
    def version_label(self) -> str:
        return "" if self.version is None else str(self.version)

    @property
    def platform(self) -> str:
        """Family and format, e.g. ``sklearn_joblib`` (Triton names platforms that way)."""
        return f"{self.manifest.family or 'python'}_{self.manifest.backend}"


def _refreeze() -> None:
    """After a model is dropped (unloaded, or replaced by the version an alias moved to).

    When the server froze its long-lived objects out of the collector's reach
    (``gc.freeze()`` after start-up), the dropped model was frozen too, and whatever of it
    only a collection frees (reference cycles) would stay for the life of the process. Thaw,
    collect and freeze again: one full collection per switch, never per request."""
    if gc.get_freeze_count():
        gc.unfreeze()
        gc.collect()
        gc.freeze()


@dataclass(frozen=True)
class Claim:
    """A model the server promises to answer for: ``ref`` as it was asked for and the version
    loaded for it now. A claim on an alias (``name@prod``) or on the newest version (``name``)
    *follows* the store when following is on; one on a version number or a path never moves.
    """

    ref: str
    name: str
    version: int | None
    alias: str | None = None
    latest: bool = False

    @property
    def follows(self) -> bool:
        return self.alias is not None or self.latest


State = Literal["READY", "UNAVAILABLE", "LOADING"]


@dataclass(frozen=True)
class IndexEntry:
    """One row of the repository index (the OIP repository extension's ``index`` answer)."""

    name: str
    version: str
    state: State
    reason: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "state": self.state,
                "reason": self.reason}  # fmt: skip


class ModelRepository:
    """Loads each ref (``load``) and answers lookups by name and version segment.

    A version a followed alias moved to that fails to load is tried again only after
    ``retry_failed_s`` seconds (the failure may have been the store's, for a moment).

    The version segment of a URL may be a version number, an alias, ``latest`` or absent
    (the highest loaded version). ``ready`` is true once start-up loading finished, and
    only while every model the server claims has its version loaded.
    """

    retry_failed_s = 60.0

    def __init__(
        self,
        refs: Sequence[str],
        *,
        store: str | None = None,
        trusted: bool | Iterable[str] = False,
    ) -> None:
        if not refs:
            raise PersistkitError("no model to serve", hint="name at least one REF")
        self.refs = list(refs)
        self.store = store
        self.trusted = trusted if isinstance(trusted, bool) else list(trusted)
        # both replaced whole under _swap, never changed in place (readers take no lock)
        self._models: dict[str, dict[int | None, ServedModel]] = {}
        self._claims: tuple[Claim, ...] = ()
        self._lock = threading.Lock()  # start-up loading
        self._swap = threading.Lock()  # writers of _models and _claims
        self._name_locks: dict[str, threading.Lock] = {}  # one load or unload per name at once
        self._status: dict[str, tuple[State, str]] = {}  # names not READY, and why
        # versions that failed to load when following -> when they failed
        self._failed: dict[tuple[str, int], float] = {}
        self._unreadable: dict[str, str] = {}  # followed names the store did not answer for
        self._started = threading.Event()

    # -- state -------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Start-up loading finished and every claimed model has its version loaded."""
        if not self._started.is_set():
            return False
        models = self._models
        return all(c.version in models.get(c.name, {}) for c in self._claims)

    @property
    def started(self) -> bool:
        """Start-up loading finished."""
        return self._started.is_set()

    @property
    def claims(self) -> tuple[Claim, ...]:
        """What the server promises to answer for now."""
        return self._claims

    def serves(self, name: str) -> bool:
        """True when some version of ``name`` is loaded."""
        return name in self._models

    # -- start-up ----------------------------------------------------------------------------
    def load(self) -> None:
        """Load every ref (idempotent); raises the first load error, leaving ``ready`` false."""
        with self._lock:
            if self._started.is_set():
                return
            for ref in self.refs:
                served, claim = self._load_ref(ref)
                self._publish(served, claim)
            self._started.set()

    def _load_ref(self, ref: str, *, stored: bool = False) -> tuple[ServedModel, Claim]:
        served = self._load_timed(ref, stored=stored)
        parsed = _parsed(ref) if served.in_store else None
        if parsed is None:  # a path: never moves
            return served, Claim(ref, served.name, served.version)
        latest = parsed.alias is None and parsed.version is None and parsed.digest is None
        return served, Claim(ref, served.name, served.version, parsed.alias, latest)

    def _load_timed(self, ref: str, *, stored: bool = False) -> ServedModel:
        """:meth:`_load_one`, timed and counted in the metrics."""
        began = time.perf_counter()
        try:
            served = self._load_one(ref, stored=stored)
        except Exception:
            parsed = _parsed(ref)
            metrics.count_load_failure(parsed.name if parsed else "")
            raise
        metrics.observe_load(served.name, time.perf_counter() - began)
        return served

    def _load_one(self, ref: str, *, stored: bool = False) -> ServedModel:
        """Load ``ref``: as the CLI reads it (a path or a ref), or with ``stored`` only from
        the store (runtime loads name a model, never a file of the server's)."""
        from persistkit.answers import read_record, record_of
        from persistkit.api import Located, load_located, locate
        from persistkit.preprocess import checked_spec
        from persistkit.store import Store

        if stored:
            directory, fetched, stored_name, number = Store(self.store).fetch(ref)
            found = Located(directory, fetched, f"{stored_name}:{number}", in_store=True)
        else:
            found = locate(ref, self.store)  # once: the manifest served is the model's own
        manifest = found.manifest
        version = manifest.version
        aliases: set[str] = set()
        if not found.in_store:  # a model file or artifact folder named by its path
            name = manifest.name or normalise_name(ref.rstrip("/").rsplit("/", 1)[-1])
        else:
            parsed = parse_ref(ref)
            name = parsed.name
            if parsed.alias is not None:
                aliases.add(parsed.alias)
            if version is not None:
                aliases |= self._aliases_of(name, version)
        read_record(manifest.outputs)  # damaged records fail start-up, not requests
        preprocess = checked_spec(manifest.preprocess, manifest=True)
        model = load_located(found, trusted=self.trusted)
        outputs = record_of(manifest, model, bare=found.bare)
        return ServedModel(
            name=name,
            version=version,
            model=model,
            manifest=manifest,
            signature=Signature.from_manifest(manifest.signature),
            aliases=aliases,
            outputs=outputs,
            preprocess=preprocess,
            in_store=found.in_store,
        )

    def _aliases_of(self, name: str, version: int) -> set[str]:
        from persistkit.store import Store

        return {a for a, v in Store(self.store).aliases(name).items() if v == version}

    def _publish(
        self, served: ServedModel | None, claim: Claim | None, replaces: Collection[Claim] = ()
    ) -> bool:
        """Swap in a new table: ``served`` added (a version already loaded is kept as it is),
        ``claim`` in place of ``replaces``, versions no claim holds dropped. Returns False,
        changing nothing, when a claim to replace is gone (unloaded meanwhile)."""
        with self._swap:
            if any(old not in self._claims for old in replaces):
                return False
            claims = [c for c in self._claims if c not in replaces]
            if claim is not None:
                claims.append(claim)
            models = {name: dict(versions) for name, versions in self._models.items()}
            if served is not None:
                models.setdefault(served.name, {}).setdefault(served.version, served)
            held = {(c.name, c.version) for c in claims}
            for name in list(models):
                kept = {v: m for v, m in models[name].items() if (name, v) in held}
                if kept:
                    models[name] = kept
                else:
                    del models[name]
            for c in claims:  # a followed alias names the version it points at, only that one
                if c.alias is not None:
                    _move_alias(models[c.name], c.alias, c.version)
            dropped = any(
                version not in models.get(name, {})
                for name, versions in self._models.items()
                for version in versions
            )
            self._models, self._claims = models, tuple(claims)
            for name in models:
                self._status.pop(name, None)
            metrics.set_loaded({name: len(versions) for name, versions in models.items()})
        if dropped:
            _refreeze()
        return True

    # -- the repository extension: load and unload at runtime --------------------------------
    def load_model(
        self, name: str, *, version: int | None = None, alias: str | None = None
    ) -> ServedModel:
        """Load ``name`` from the store (a version number, an alias, or else the newest) and
        serve it in place of whatever of ``name`` was served before. Raises the load's error
        (the models served before stay)."""
        from persistkit.store import Store

        validate_name(name)
        if alias is not None:
            validate_name(alias, what="alias")
        text = str(Ref(name, version=version, alias=alias))
        if name not in self._models:
            # a name the store lacks raises here, before any lock, index row or metric
            # label is made for it: a client cannot grow them with made-up names
            Store(self.store).resolve(name)
        with self._name_lock(name):
            self._status[name] = ("LOADING", f"loading {text}")
            try:
                served, claim = self._load_ref(text, stored=True)
            except Exception as exc:
                self._status[name] = ("UNAVAILABLE", f"loading {text} failed: {_reason(exc)}")
                logger.error("loading %s failed: %s", text, _reason(exc))
                raise
            with self._swap:
                old = [c for c in self._claims if c.name == name]
            self._publish(served, claim, replaces=old)
            logger.info("loaded %s (version %s)", text, served.version_label or "-")
            return served

    def unload_model(self, name: str) -> None:
        """Stop serving every version of ``name``. Requests already running finish."""
        if not self._holds(name):  # before taking a lock: none is kept for made-up names
            raise self._not_loaded(name)
        with self._name_lock(name):
            with self._swap:
                old = [c for c in self._claims if c.name == name]
            if not old and name not in self._models:  # unloaded meanwhile
                raise self._not_loaded(name)
            self._publish(None, None, replaces=old)
            self._status[name] = ("UNAVAILABLE", "unloaded")
            logger.info("unloaded %s", name)

    def _holds(self, name: str) -> bool:
        return name in self._models or any(c.name == name for c in self._claims)

    @staticmethod
    def _not_loaded(name: str) -> ModelNotServedError:
        return ModelNotServedError(
            f"no model named {name[:128]!r} is loaded here, so it cannot be unloaded",
            hint="GET /v2/repository/index lists the models and their state",
        )

    def _name_lock(self, name: str) -> threading.Lock:
        with self._swap:
            return self._name_locks.setdefault(name, threading.Lock())

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        """Every model of the store and every loaded one, by name: one READY row per loaded
        version; otherwise one row saying why not (``not loaded``, ``unloaded``, a load
        error) or that it is LOADING. ``ready_only`` keeps the READY rows."""
        from persistkit.store import Store

        models, status = self._models, dict(self._status)
        try:
            stored = Store(self.store).list()
        except PersistkitError as exc:  # the index still shows what is loaded
            logger.warning("listing the store for the repository index failed: %s", exc)
            stored = []
        rows: list[IndexEntry] = []
        for name in sorted({*stored, *models, *status}):
            for served in sorted(models.get(name, {}).values(), key=lambda m: m.version or 0):
                rows.append(IndexEntry(name, served.version_label, "READY"))
            state, reason = status.get(name, ("UNAVAILABLE", "not loaded"))
            if name not in models or state == "LOADING":
                rows.append(IndexEntry(name, "", state, reason))
        return [row for row in rows if row.state == "READY" or not ready_only]

    # -- following aliases -------------------------------------------------------------------
    def follow_once(self) -> None:
        """Look where each followed alias (and ``latest``) points now; load a version it moved
        to, then switch to it. A version that fails to load is logged and counted, the old
        one keeps answering, and it is tried again only after ``retry_failed_s`` (a store that
        failed for a moment must not keep an alias from moving until a restart)."""
        from persistkit.store import Store

        if not self._started.is_set():
            return
        store = Store(self.store)
        for name in sorted({c.name for c in self._claims if c.follows}):
            try:
                aliases = store.aliases(name)
                newest = store.resolve(name)[1]
            except PersistkitError as exc:
                if self._unreadable.get(name) != exc.message:  # once, not every interval
                    logger.warning("following %s: the store could not be read: %s", name, exc)
                    self._unreadable[name] = exc.message
                continue
            if self._unreadable.pop(name, None) is not None:
                logger.info("following %s: the store answers again", name)
            for claim in [c for c in self._claims if c.name == name and c.follows]:
                target = newest if claim.latest else aliases.get(claim.alias or "")
                if target is not None and target != claim.version:
                    self._switch(claim, target)
            self._refresh_aliases(name, aliases)

    def _switch(self, claim: Claim, target: int) -> None:
        failed_at = self._failed.get((claim.name, target))
        if failed_at is not None and time.monotonic() - failed_at < self.retry_failed_s:
            return
        shown = claim.ref if claim.follows else claim.name
        with self._name_lock(claim.name):
            served = self._models.get(claim.name, {}).get(target)
            if served is None:
                try:
                    served = self._load_timed(f"{claim.name}:{target}", stored=True)
                except Exception as exc:
                    self._failed[(claim.name, target)] = time.monotonic()
                    logger.error(
                        "%s moved to version %d, which failed to load; still serving "
                        "version %s: %s",
                        shown, target, claim.version, _reason(exc),
                    )  # fmt: skip
                    return
            if self._publish(served, replace(claim, version=target), replaces=[claim]):
                metrics.count_switch(claim.name)
                logger.info("%s moved: now serving version %d (was %s)", shown, target,
                            claim.version)  # fmt: skip

    def _refresh_aliases(self, name: str, aliases: dict[str, int]) -> None:
        """The store's aliases as they are now, on each loaded version of ``name``."""
        with self._swap:
            versions = self._models.get(name)
            if not versions:
                return
            followed = {c.alias: c.version for c in self._claims if c.name == name and c.alias}
            wanted = {**aliases, **followed}
            changed = {}
            for version, served in versions.items():
                now = {a for a, v in wanted.items() if v == version}
                if now != served.aliases:
                    changed[version] = replace(served, aliases=now)
            if changed:
                self._models = {**self._models, name: {**versions, **changed}}

    # -- lookups -----------------------------------------------------------------------------
    def models(self) -> list[ServedModel]:
        """Every loaded model version, by name then version."""
        models = self._models
        return [
            served
            for name in sorted(models)
            for _, served in sorted(models[name].items(), key=lambda kv: kv[0] or 0)
        ]

    def versions(self, name: str) -> list[str]:
        """Loaded version numbers of ``name`` as strings (an artifact served from a path has
        none)."""
        return [m.version_label for m in self.models() if m.name == name and m.version_label]

    def get(self, name: str, segment: str | None = None) -> ServedModel:
        """The loaded model ``name`` at ``segment`` (a version number, an alias, ``latest``
        or None for the highest loaded version). Raises :class:`ModelNotServedError`."""
        models = self._models
        versions = models.get(name)
        if not versions:
            served_names = ", ".join(sorted(models)) or "none"
            raise ModelNotServedError(
                f"no model named {name[:128]!r} is served here (served: {served_names})",
                hint="GET /v2/models/NAME for a name this server loaded",
            )
        if segment is None or segment in ("", "latest"):
            return versions[max(versions, key=lambda v: v or 0)]
        if segment.isdigit() and segment.isascii():
            found = versions.get(int(segment))
            if found is None:
                raise self._missing(name, f"version {segment}")
            return found
        for served in versions.values():
            if segment in served.aliases:
                return served
        return self._by_store_alias(name, segment, versions)

    def _by_store_alias(
        self, name: str, alias: str, versions: dict[int | None, ServedModel]
    ) -> ServedModel:
        """An alias the server was not started with: ask the store where it points now."""
        from persistkit.store import Store

        try:
            _, version = Store(self.store).resolve(parse_ref(f"{name}@{alias}"))
        except PersistkitError:
            raise self._missing(name, f"alias {alias[:128]!r}") from None
        if version not in versions:
            raise self._missing(name, f"alias {alias!r} (now version {version})")
        return versions[version]

    def _missing(self, name: str, what: str) -> ModelNotServedError:
        loaded = ", ".join(self.versions(name)) or "none"
        return ModelNotServedError(
            f"{name} has no {what} loaded in this server (loaded versions: {loaded})",
            hint=f"load it (POST /v2/repository/models/{name}/load), or restart "
            f"`persistkit serve` with {name}:VERSION or {name}@ALIAS",
        )


def _move_alias(versions: dict[int | None, ServedModel], alias: str, target: int | None) -> None:
    """``alias`` on version ``target`` of one model and on none of its other versions
    (changed entries are replaced, never edited: readers may hold the old ones)."""
    for version, served in versions.items():
        has = alias in served.aliases
        if (version == target) != has:
            changed = served.aliases | {alias} if version == target else served.aliases - {alias}
            versions[version] = replace(served, aliases=changed)


def _parsed(ref: str) -> Ref | None:
    try:
        return parse_ref(ref)
    except PersistkitError:
        return None


def _reason(exc: BaseException) -> str:
    """One line saying why a load failed."""
    text = exc.message if isinstance(exc, PersistkitError) else f"{type(exc).__name__}: {exc}"
    return text.splitlines()[0][:500] if text else type(exc).__name__
