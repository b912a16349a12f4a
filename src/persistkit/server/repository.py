"""The models a server answers for: loaded once, looked up by name and version or alias."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from persistkit.errors import ModelNotServedError, PersistkitError
from persistkit.manifest import Manifest
from persistkit.refs import normalise_name, parse_ref
from persistkit.signature import OUTPUT_NAME, Signature, TensorSpec

#: the outputs a model saved with labels answers beside its own (see persistkit.answers)
LABEL_OUTPUT = "label"
SCORES_OUTPUT = "scores"


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


class ModelRepository:
    """Loads each ref once (``load``) and answers lookups by name and version segment.

    The version segment of a URL may be a version number, an alias, ``latest`` or absent
    (the highest loaded version). ``ready`` is true only after every ref has loaded.
    """

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
        self._models: dict[str, dict[int | None, ServedModel]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def load(self) -> None:
        """Load every ref (idempotent); raises the first load error, leaving ``ready`` false."""
        with self._lock:
            if self._ready.is_set():
                return
            for ref in self.refs:
                served = self._load_one(ref)
                versions = self._models.setdefault(served.name, {})
                if served.version in versions:
                    versions[served.version].aliases |= served.aliases
                else:
                    versions[served.version] = served
            self._ready.set()

    def _load_one(self, ref: str) -> ServedModel:
        from persistkit.answers import read_record, record_of
        from persistkit.api import load_located, locate
        from persistkit.preprocess import checked_spec

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
        )

    def _aliases_of(self, name: str, version: int) -> set[str]:
        from persistkit.store import Store

        return {a for a, v in Store(self.store).aliases(name).items() if v == version}

    def models(self) -> list[ServedModel]:
        """Every loaded model version, by name then version."""
        return [
            served
            for name in sorted(self._models)
            for _, served in sorted(self._models[name].items(), key=lambda kv: kv[0] or 0)
        ]

    def versions(self, name: str) -> list[str]:
        """Loaded version numbers of ``name`` as strings (an artifact served from a path has
        none)."""
        return [m.version_label for m in self.models() if m.name == name and m.version_label]

    def get(self, name: str, segment: str | None = None) -> ServedModel:
        """The loaded model ``name`` at ``segment`` (a version number, an alias, ``latest``
        or None for the highest loaded version). Raises :class:`ModelNotServedError`."""
        versions = self._models.get(name)
        if not versions:
            served_names = ", ".join(sorted(self._models)) or "none"
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
        return versions[self._resolve_alias(name, segment)]

    def _resolve_alias(self, name: str, alias: str) -> int:
        """An alias the server was not started with: ask the store where it points now."""
        from persistkit.store import Store

        try:
            _, version = Store(self.store).resolve(parse_ref(f"{name}@{alias}"))
        except PersistkitError:
            raise self._missing(name, f"alias {alias[:128]!r}") from None
        if version not in self._models[name]:
            raise self._missing(name, f"alias {alias!r} (now version {version})")
        return version

    def _missing(self, name: str, what: str) -> ModelNotServedError:
        loaded = ", ".join(self.versions(name)) or "none"
        return ModelNotServedError(
            f"{name} has no {what} loaded in this server (loaded versions: {loaded})",
            hint=f"restart `persistkit serve` with {name}:VERSION or {name}@ALIAS to serve it",
        )
