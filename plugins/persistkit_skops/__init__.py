"""The ``skops`` backend: scikit-learn models in skops' pickle-free format (a zip holding a
JSON ``schema.json`` and raw ``.npy`` arrays).

Save is ``skops.io.dump``. Load reads the checked bytes once and hands them to skops' own
loader, whose audit lists every type the file would construct or reference before anything
is built (``skops.io.get_untrusted_types``). persistkit's policy decides which of those may
be built (:func:`trusted_types`), and only that list is passed to ``skops.io.loads`` as
``trusted=``, so skops' audit enforces it again just before it constructs the objects.

The invariant that makes this backend ``safe``: under the default policy a load imports and
builds only types skops trusts by default (scikit-learn estimators, numpy/scipy containers,
numpy ufuncs), types on persistkit's allow-list where skops only references them or makes
them without calling them with the file's arguments, and the exact names in ``trusted=``;
nothing else from the file is imported, called or built. ``trusted=True`` (or your own
seal) trusts every type the file names, which, as for every backend, may run its code.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import persistkit
from persistkit import Backend, BackendInfo
from persistkit.errors import CannotSaveError, FormatError, PersistkitError, UntrustedArtifactError
from persistkit.safety import check_native_structures

#: skops nodes that reference a type or make an instance of it without calling it with
#: arguments from the file (``cls.__new__`` and the attributes set, like pickle's BUILD): a
#: name persistkit's allow-list accepts may be built this way. Nodes that *call* what they
#: name with the file's arguments (``ConstructorFromReduceNode``), look up a method by a name
#: the file gives (``MethodNode``, ``OperatorFuncNode``) or bind arguments (``PartialNode``)
#: need the name in ``trusted=`` (the allow-list's own argument checks do not apply there).
REFERENCE_NODES = frozenset({"ObjectNode", "TypeNode", "FunctionNode"})
#: a skops file is a handful of entries; its schema is JSON describing the model
MAX_ENTRIES = 100_000
_ZIP_MAGIC = b"PK\x03\x04"
_RATIO_FLOOR = 64 * 1024**2
_SCHEMA = "schema.json"


def is_sklearn_model(model: Any) -> bool:
    """True for scikit-learn estimators and pipelines (checked without importing sklearn)."""
    return not isinstance(model, type) and any(
        cls.__module__.split(".", 1)[0] == "sklearn" for cls in type(model).__mro__[:-1]
    )


class SkopsBackend(Backend):
    """``skops.io`` files: scikit-learn models without pickle."""

    info = BackendInfo(
        "skops",
        description="skops: scikit-learn models without pickle (JSON schema plus raw arrays); "
        "loads build only audited types, trusted= names the rest",
        safe=True,
        requires=("skops",),
        extra="skops",
        suffixes=(".skops",),
        save_options=("compression",),
        load_options=(),
    )
    file_name = "model.skops"

    def can_save(self, model: Any) -> bool:
        return is_sklearn_model(model)

    def sniff(self, path: Path, head: bytes) -> bool:
        """A ``.skops`` file, or a zip whose entries include ``schema.json`` (skops' own)."""
        if super().sniff(path, head):
            return True
        if not head.startswith(_ZIP_MAGIC) or path.suffix.lower() in (".pt", ".pth", ".pt2"):
            return False
        try:
            with zipfile.ZipFile(path) as archive:
                return _SCHEMA in archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            return False

    @persistkit.hookimpl
    def persistkit_sniff(self, path: Path, head: bytes) -> str | None:
        # not trylast like other backends: a skops zip may start with an .npy member, which
        # the numpy backend's generic check would take for an .npz; skops claims a file
        # only on its own evidence (suffix, schema.json), so it is asked first
        return self.info.name if self.sniff(path, head) else None

    def save(self, model: Any, path: Path, options: dict[str, Any]) -> None:
        import skops
        import skops.io as sio

        if not is_sklearn_model(model):
            raise CannotSaveError(
                f"the skops backend saves scikit-learn estimators and pipelines, not a "
                f"{type(model).__qualname__}",
                hint='pick another backend, e.g. backend="joblib" (`persistkit backends` '
                "lists them)",
            )
        compression = zipfile.ZIP_DEFLATED if options.get("compression") else zipfile.ZIP_STORED
        try:
            sio.dump(model, path, compression=compression)
        except (TypeError, ValueError, AttributeError) as exc:
            raise CannotSaveError(
                f"skops cannot store this {type(model).__qualname__}: {type(exc).__name__}: {exc}",
                hint='save it with backend="joblib" (loads through persistkit\'s allow-list)',
            ) from None
        options["skops_version"] = skops.__version__

    def load(self, path: Path, manifest: Any, options: dict[str, Any], policy: Any) -> Any:
        return self.load_path(path, manifest, options, policy)

    def load_payload(
        self, payload: Any, manifest: Any, options: dict[str, Any], policy: Any
    ) -> Any:
        # the checked bytes, read once: audited and loaded from memory
        return load_skops_bytes(payload.read_bytes(), policy, name=payload.name)


def load_skops_bytes(data: bytes, policy: Any, *, name: str) -> Any:
    """The object in the skops file ``data`` (the whole file), built under ``policy``.

    Raises :class:`UntrustedArtifactError` naming every type the policy does not trust
    (``globals_needed``), and :class:`FormatError` for a damaged or non-skops file.
    """
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    audit = SchemaAudit(data, policy, name=name)
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except PersistkitError:
        raise
    except Exception as exc:  # skops fails anywhere in its reader on a damaged schema
        raise _damaged(name, exc) from None
    trusted, refused = trusted_types(untrusted, audit, policy)
    if refused:
        shown = ", ".join(refused)
        raise UntrustedArtifactError(
            f"refusing to load {policy.source}: its skops file {name} would build "
            f"{shown}, which {'is' if len(refused) == 1 else 'are'} neither trusted by skops "
            "nor allowed there by persistkit's allow-list (loading it could run code)",
            globals_needed=refused,
        )
    try:
        model = sio.loads(data, trusted=trusted)
    except UntrustedTypesFoundException as exc:  # skops' own audit, after ours: same answer
        raise UntrustedArtifactError(
            f"refusing to load {policy.source}: skops' audit of {name} refused it: {exc}",
            globals_needed=untrusted,
        ) from None
    except PersistkitError:
        raise
    except Exception as exc:
        raise _damaged(name, exc) from None
    if not policy.trust_all:
        # a decision tree whose child indices point outside its nodes makes predict read
        # out of bounds: the checks persistkit runs after every untrusted unpickle
        check_native_structures(model, what=f"skops file {name}")
    return model


def trusted_types(
    untrusted: list[str], audit: SchemaAudit, policy: Any
) -> tuple[list[str], list[str]]:
    """Split skops' ``untrusted`` type names into those ``policy`` trusts and the rest.

    A name is trusted when the policy trusts everything, when the user named it exactly
    (``trusted=[...]``), or when persistkit's allow-list accepts it and every skops node
    naming it only references or makes it (:data:`REFERENCE_NODES`), or is a node whose
    arguments persistkit checked as its own unpickler checks them (a decision tree).
    """
    trusted, refused = [], []
    for type_name in untrusted:
        named = type_name in policy.trusted_globals
        by_list = policy.allows(type_name) and audit.made_safely(type_name)
        (trusted if policy.trust_all or named or by_list else refused).append(type_name)
    return sorted(trusted), sorted(refused)


class SchemaAudit:
    """What a skops file's ``schema.json`` builds: each ``module.name`` with the nodes that
    name it, checked against the zip it came from (:meth:`made_safely`)."""

    def __init__(self, data: bytes, policy: Any, *, name: str) -> None:
        self.data = data
        self.name = name
        self.schema = read_schema(data, policy, name=name)
        self.nodes: dict[str, list[dict[str, Any]]] = {}
        self.by_id: dict[Any, list[dict[str, Any]]] = {}
        for node in _nodes(self.schema):
            module, cls = node.get("__module__"), node.get("__class__")
            if isinstance(module, str) and isinstance(cls, str):
                self.nodes.setdefault(f"{module}.{cls}", []).append(node)
            if "__id__" in node:
                self.by_id.setdefault(_hashable(node["__id__"]), []).append(node)

    def made_safely(self, type_name: str) -> bool:
        """Whether every node naming ``type_name`` references it, makes it without calling
        it with the file's arguments, or calls it with arguments checked here."""
        found = self.nodes.get(type_name)
        if not found:
            return False
        for node in found:
            loader = node.get("__loader__")
            if loader in REFERENCE_NODES:
                continue
            if (loader, type_name) == _TREE and self._tree_arguments_ok(node):
                continue
            return False
        return True

    def _tree_arguments_ok(self, node: dict[str, Any]) -> bool:
        """``Tree(n_features, n_classes, n_outputs)`` copies ``n_outputs`` entries of the
        ``n_classes`` array without bounds checks (persistkit's unpickler checks the same)."""
        reduce = node.get("__reduce__")
        args = reduce.get("args") if isinstance(reduce, dict) else None
        if not (
            isinstance(args, dict)
            and args.get("__loader__") == "TupleNode"
            and isinstance(args.get("content"), list)
            and len(args["content"]) == 3
            and all(self._described_once(part) for part in _nodes(args))
        ):
            return False
        n_features, n_classes, n_outputs = args["content"]
        features, outputs = _json_int(n_features), _json_int(n_outputs)
        if features is None or outputs is None:
            return False
        if not 0 <= features <= 1 << 31 or not 1 <= outputs <= 1 << 20:
            return False
        counts = self._array(n_classes)
        return (
            counts is not None
            and counts.ndim == 1
            and counts.shape[0] == outputs
            and counts.dtype.kind in "iu"
            and (counts.size == 0 or (counts.min() >= 1 and counts.max() <= 1 << 31))
        )

    def _described_once(self, node: dict[str, Any]) -> bool:
        # skops builds the first node of an __id__ for every later one (memoisation): a
        # node checked here must be the same wherever its __id__ appears
        if "__id__" not in node:
            return True
        return all(other == node for other in self.by_id.get(_hashable(node["__id__"]), []))

    def _array(self, node: Any) -> Any:
        import numpy as np

        if not (
            isinstance(node, dict)
            and node.get("__loader__") == "NdArrayNode"
            and node.get("type") == "numpy"
            and isinstance(node.get("file"), str)
        ):
            return None
        try:
            with zipfile.ZipFile(io.BytesIO(self.data)) as archive:
                raw = archive.read(node["file"])
            return np.load(io.BytesIO(raw), allow_pickle=False)
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile):
            return None


_TREE = ("TreeNode", "sklearn.tree._tree.Tree")


def _json_int(node: Any) -> int | None:
    if not (isinstance(node, dict) and node.get("__loader__") == "JsonNode"):
        return None
    try:
        value = json.loads(node["content"])
    except (KeyError, TypeError, ValueError):
        return None
    return value if type(value) is int else None


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (int, str, float, bool, type(None))) else repr(value)


def read_schema(data: bytes, policy: Any, *, name: str) -> dict[str, Any]:
    """``schema.json`` of the skops file ``data``, refusing what is not one: not a zip,
    entries named twice (readers could disagree on which counts), no schema, or entries that
    unpack to more than ``policy.max_decompressed_bytes`` or beyond its compression ratio."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_ENTRIES:
                raise FormatError(f"{name} holds {len(infos)} entries; no skops file does")
            twice = sorted(n for n, k in Counter(i.filename for i in infos).items() if k > 1)
            if twice:
                raise FormatError(
                    f"{name} is not a valid skops file: entry {twice[0]!r} appears more than "
                    "once (readers disagree on which one counts)",
                    hint="the file is damaged or was crafted; do not load it",
                )
            _check_sizes(infos, len(data), policy, name)
            raw = archive.read(_SCHEMA)
        schema = json.loads(raw)
    except PersistkitError:
        raise
    except KeyError:
        raise FormatError(
            f"{name} is a zip without {_SCHEMA}, so it is not a skops file",
            hint="check the file; skops.io.dump writes .skops files",
        ) from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as exc:
        raise _damaged(name, exc) from None
    if not isinstance(schema, dict):
        raise _damaged(name, ValueError(f"{_SCHEMA} is not a JSON object"))
    return schema


def _check_sizes(infos: list[zipfile.ZipInfo], size: int, policy: Any, name: str) -> None:
    # zipfile stops each entry at its declared size, so the declared sizes bound memory
    unpacked = sum(i.file_size for i in infos)
    limit = policy.max_decompressed_bytes
    ratio_limit = policy.max_compression_ratio
    if unpacked > limit or (unpacked > _RATIO_FLOOR and unpacked > size * ratio_limit):
        raise FormatError(
            f"{name} would unpack to {unpacked} bytes from {size}: beyond persistkit's "
            f"limits ({limit} bytes, ratio {ratio_limit}); it looks like a decompression bomb",
            hint="do not load it; if it is genuine, re-save it without compression",
        )


def _nodes(schema: Any) -> Iterator[dict[str, Any]]:
    """Every node (a dict with ``__loader__``) in a skops schema, without recursion."""
    stack = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__loader__" in item:
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _damaged(name: str, exc: BaseException) -> FormatError:
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return FormatError(
        f"{name} is not a readable skops file: {type(exc).__name__}: {first}".rstrip(": "),
        hint="the file is truncated, damaged or from an incompatible skops version; restore "
        "it or save the model again",
    )


plugin = SkopsBackend()

__all__ = [
    "REFERENCE_NODES",
    "SchemaAudit",
    "SkopsBackend",
    "load_skops_bytes",
    "plugin",
    "trusted_types",
]
