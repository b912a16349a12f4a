"""The audit that lets an untrusted ``.pt2`` archive (``torch.export.save``) load safely.

``torch.export.load`` is not a safe reader by itself (checked against torch 2.13's
``torch/export/pt2_archive/_package.py``, ``torch/_export/serde/serialize.py`` and
``torch/export/_unlift.py``): weights and constants marked ``use_pickle`` go through
``torch.load(weights_only=False)``; ``custom_obj_*`` and ``opaque_obj_*`` constants through
``torch._C._pickle_load_obj`` and ``pickle.loads``; legacy ``data/weights/<model>.pt`` files
and the sample inputs through ``torch.load(weights_only=True)`` *falling back to
weights_only=False* when that fails; graph node targets are resolved by walking ``getattr``
from ``torch``, ``math`` or ``_operator`` (``torch.os.system`` resolves) and called when the
module runs; every ``expr_str`` goes through ``sympy.sympify`` (which ``eval``\\ s); the
``guards_code`` strings, and guards built from the placeholders' example values (a string
value is pasted between quotes), are compiled with ``exec`` into a guard function by
``ExportedProgram.module()`` (the ``export`` backend passes ``check_guards=False``, so no
guard function is built at all); ``data/aotinductor/`` entries load compiled shared libraries.

**The invariant.** :func:`audit_pt2` accepts an archive only if every one of those paths is
closed on *these very bytes*, which the caller then hands to torch unchanged (from memory,
never by opening the file again):

* the bytes are one well-formed zip: local headers at offset 0, the end record in the last 22
  bytes and no comment, every entry stored (uncompressed) with a matching CRC, one root
  folder, no duplicate names (not even ones that differ only in case: torch's zip reader
  looks names up ignoring case, so it could read another entry than the one audited), no
  absolute or ``..`` paths, bounded counts and sizes; an empty weight or constant file
  holds an empty tensor (torch allocates the sizes its config claims with zeros);
* every entry is one the reader is known to treat as data: ``archive_format`` (``pt2``),
  ``archive_version``, ``byteorder``, ``.data/*``, ``models/<m>.json``, the weights and
  constants configs and the raw ``weight_N``/``tensor_N`` files they name,
  ``data/sample_inputs/<m>.pt`` and UTF-8 ``extra/*`` text; nothing else (no AOTInductor,
  ExecuTorch, MTIA or legacy pickled weight files);
* every weight and constant is stored raw (``use_pickle`` false), none is a custom or opaque
  object;
* the sample inputs load under ``torch.load(weights_only=True)`` (so torch's fallback to a
  full unpickle is never taken) and are a tuple or dict;
* every graph (subgraphs included) calls only ``torch.ops.aten.*``/``torch.ops.prims.*``
  overloads (except the few that touch files or print), a reviewed handful of higher-order
  ops, ``_operator``/``math``/``torch.sym_*`` functions for shape arithmetic; the same for
  operators passed as arguments and for the ``source_fn_stack`` metadata torch resolves;
* every ``expr_str`` is shape arithmetic: integers, symbol names like ``s77``, ``+ - * /``,
  comparisons, parentheses and the reviewed sympy function names; no attribute access,
  subscripts, strings, keyword arguments, ``**`` or other names;
* ``guards_code`` is empty and the top-level graph takes only tensors (so no guard is built
  from a string or float the file chose); tree specs name only tuples, lists and dicts, and
  their contexts are plain JSON (``null`` or a list of keys: torch decodes contexts with a
  hook that *imports any module* an ``{"__enum__": ...}`` object names);
  verifiers are ``ATEN`` or ``TRAINING``;
* every name torch pastes into the Python source of ``forward`` that fx generates and
  ``exec``\\ s (at load, and again in ``.module()``) is a plain identifier: graph value and
  node names (``name``, ``as_name``, the keys of ``tensor_values`` and the other value
  tables), argument and subgraph names, ``forward_arg_names`` and the keyword names of the
  top-level ``in_spec``; every parameter, buffer and constant name is identifiers or digits
  joined by dots (fx writes a non-identifier part between quotes, ``getattr(self, "0")``).
  An input named ``*b, c=<code>`` would otherwise run ``<code>`` as a default argument.

Anything else raises :class:`UntrustedArtifactError` naming the entry, target or expression,
or :class:`FormatError` for a damaged archive. Resource use of the graph itself (a huge
``aten.empty``) is bounded only by the archive's size, not by this audit.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, NoReturn

from persistkit.errors import FormatError, UntrustedArtifactError

PT2_MARKER = b"pt2"
MAX_ENTRIES = 100_000
MAX_JSON_BYTES = 256 * 1024**2
MAX_EXPR_CHARS = 4_000
MAX_EXPR_DEPTH = 40

_ZIP_MAGIC = b"PK\x03\x04"
_EOCD = b"PK\x05\x06"
_TRUST_HINT = "if you trust its source, pass trusted=True (torch then loads it as it is)"
_DAMAGED_HINT = "the file is truncated or damaged; restore it or export the model again"

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_MODEL_NAME = re.compile(r"[A-Za-z0-9_]{1,200}")
_WEIGHT_FILE = re.compile(r"weight_\d{1,9}")
_CONSTANT_FILE = re.compile(r"tensor_\d{1,9}")
_FIXED_ENTRIES = frozenset(
    {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
)

# aten overloads that reach outside the tensor world: from_file maps (and with shared=True
# writes) a file, save writes one, _print and warn write to the console. Found by listing the
# schemas whose arguments are strings (torch._C._jit_get_all_schemas()).
_DENIED_ATEN = frozenset({"from_file", "save", "_print", "warn"})
_OPERATOR_NAMESPACES = frozenset({"aten", "prims"})
# higher-order ops that only run subgraphs of the same file (which are audited too), or set
# grad/autocast modes; others (triton kernels, delegates, effects) run code from elsewhere
_HIGHER_ORDER = frozenset(
    {"cond", "while_loop", "wrap_with_set_grad_enabled", "wrap_with_autocast"}
)
# arithmetic on sizes (SymInts) that export writes as plain Python functions
_PLAIN_TARGETS = frozenset(
    {
        f"_operator.{n}"
        for n in (
            "getitem",
            "add",
            "sub",
            "mul",
            "floordiv",
            "truediv",
            "mod",
            "neg",
            "eq",
            "ne",
            "lt",
            "le",
            "gt",
            "ge",
            "and_",
            "or_",
            "not_",
            "pos",
            "abs",
        )
    }
    | {f"math.{n}" for n in ("ceil", "floor", "trunc", "sqrt")}
    | {
        f"torch.{n}"
        for n in (
            "sym_int",
            "sym_float",
            "sym_max",
            "sym_min",
            "sym_not",
            "sym_ite",
            "sym_sum",
            "_sym_sqrt",
            "sym_sqrt",
        )
    }
)
_TARGET = re.compile(rf"torch\.ops\.({_IDENT})\.({_IDENT})(?:\.({_IDENT}))?")
# sympy functions an expr_str may call: the shape functions torch's deserializer lists, less
# those whose integer arguments blow up (PowByNatural, FloatPow, LShift, RShift), and the
# sympy relations and logic torch prints for SymBools
_EXPR_FUNCTIONS = frozenset(
    {
        "FloorDiv",
        "ModularIndexing",
        "Where",
        "PythonMod",
        "Mod",
        "CleanDiv",
        "CeilToInt",
        "FloorToInt",
        "CeilDiv",
        "FloatTrueDiv",
        "IntTrueDiv",
        "TruncToFloat",
        "TruncToInt",
        "RoundToInt",
        "RoundDecimal",
        "ToFloat",
        "Identity",
        "Max",
        "Min",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "And",
        "Or",
        "Not",
        "True",
        "False",
    }
)
_SYMBOL = re.compile(r"[a-z]{1,4}\d{1,9}")
_SYMBOL_CALL = re.compile(
    r"Symbol\('([a-z]{1,4}\d{1,9})'"
    r"(?:, (?:positive|nonnegative|integer|real|finite|extended_real)=(?:True|False)){0,6}\)"
)
_EXPR_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d{1,30}(?:\.\d{1,30})?(?:e-?\d{1,3})?)(?![A-Za-z_\d])"
    rf"|(?P<name>{_IDENT})|(?P<op>==|!=|<=|>=|[-+*/(),<>]))"
)
_TREE_TYPES = frozenset(
    {None, "builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict"}
)
_VERIFIERS = frozenset({"ATEN", "TRAINING"})
# names fx writes into generated Python source as they are (graph values, nodes, arguments,
# subgraphs, placeholders) and the tables keyed by them
_PLAIN_NAME = re.compile(_IDENT)
_NAME_FIELDS = frozenset({"name", "as_name", "user_input_name"})
_NAME_TABLES = frozenset(
    {"tensor_values", "sym_int_values", "sym_bool_values", "sym_float_values", "custom_obj_values"}
)
# attribute paths (fx writes each part after a dot, or between quotes when not an identifier)
_FQN = re.compile(r"[A-Za-z0-9_]{1,200}(?:\.[A-Za-z0-9_]{1,200}){0,50}")
_FQN_FIELDS = frozenset(
    {"parameter_name", "buffer_name", "tensor_constant_name", "custom_obj_name"}
)
_INPUT_SPECS = frozenset({"parameter", "buffer", "tensor_constant", "user_input"})


@dataclass
class Pt2Audit:
    """What an accepted archive holds: its models, weight and constant counts, and every
    distinct call target of its graphs."""

    models: list[str] = field(default_factory=list)
    weights: int = 0
    constants: int = 0
    targets: set[str] = field(default_factory=set)


def looks_like_pt2(names: list[str]) -> bool:
    """Whether zip entry ``names`` are a torch.export archive's (an ``archive_format`` entry
    under the root folder, and ``models/*.json``)."""
    stripped = {n.split("/", 1)[1] for n in names if "/" in n}
    return "archive_format" in stripped and any(
        n.startswith("models/") and n.endswith(".json") for n in stripped
    )


def audit_pt2(data: bytes, *, name: str = "model.pt2") -> Pt2Audit:
    """Check ``data`` (a whole ``.pt2`` file) against the invariant in this module's
    docstring; return what it holds, or raise :class:`UntrustedArtifactError` (it would run
    or unpickle something) or :class:`FormatError` (it is damaged or not a pt2 archive).

    The caller must then load exactly ``data`` (e.g. ``torch.export.load(io.BytesIO(data))``).
    Needs torch only to check the sample inputs with torch's own weights-only reader.
    """
    entries = _read_zip(data, name)
    result = Pt2Audit()
    fmt = entries.get("archive_format")
    if fmt is None or fmt.strip() != PT2_MARKER:
        raise FormatError(
            f"{name} is a zip file but not a torch.export archive (no archive_format 'pt2')",
            hint="save it with torch.export.save, or load it with the backend that wrote it",
        )
    models = sorted(
        n[len("models/") : -len(".json")]
        for n in entries
        if n.startswith("models/") and n.endswith(".json")
    )
    if not models:
        raise FormatError(f"{name} holds no exported program (models/*.json)", hint=_DAMAGED_HINT)
    expected = set(_FIXED_ENTRIES)
    for model in models:
        if not _MODEL_NAME.fullmatch(model):
            _refuse(name, f"it names a model {model!r} that is not a plain name")
        expected |= _audit_model(entries, model, name, result)
        result.models.append(model)
    for entry, content in entries.items():
        if entry in expected:
            continue
        if entry.startswith("extra/") and len(entry) > len("extra/"):
            _utf8(content, entry, name)  # torch reads these as text only
            continue
        _refuse(
            name,
            f"it holds the entry {entry!r}, which persistkit does not know to be data"
            + (" (AOTInductor compiled code)" if entry.startswith("data/aotinductor/") else ""),
        )
    return result


# -- the zip ---------------------------------------------------------------------------------


def _read_zip(data: bytes, name: str) -> dict[str, bytes]:
    """The entries under the archive's root folder, by name without that folder."""
    if not data.startswith(_ZIP_MAGIC) or len(data) < 22 or data[-22:-18] != _EOCD:
        raise FormatError(
            f"{name} is not a complete .pt2 archive (no zip header, or the end of the zip is "
            "missing: truncated?)",
            hint=_DAMAGED_HINT,
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise FormatError(
            f"{name} is not a readable zip archive: {exc}", hint=_DAMAGED_HINT
        ) from None
    if archive.comment:
        _refuse(name, "its zip has a comment (a second archive could hide in it)")
    if not infos:
        raise FormatError(f"{name} is an empty zip archive", hint=_DAMAGED_HINT)
    if len(infos) > MAX_ENTRIES:
        _refuse(name, f"it has {len(infos)} entries (more than {MAX_ENTRIES})")
    twice = sorted(n for n, k in Counter(i.filename.lower() for i in infos).items() if k > 1)
    if twice:
        _refuse(
            name,
            f"the entry {twice[0]!r} appears more than once, perhaps in another case (torch's "
            "zip reader ignores case; readers disagree on which one counts)",
        )
    if min(i.header_offset for i in infos) != 0:
        _refuse(name, "bytes precede its first zip entry")
    root = infos[0].filename.split("/", 1)[0]
    entries: dict[str, bytes] = {}
    for info in infos:
        entry = _checked_name(info.filename, root, name)
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            _refuse(name, f"the entry {info.filename!r} is compressed; torch writes stored entries")
        if info.file_size > len(data):
            raise FormatError(
                f"{name}: entry {info.filename!r} claims more bytes than the file has",
                hint=_DAMAGED_HINT,
            )
        try:
            content = archive.read(info)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as exc:
            raise FormatError(
                f"{name}: entry {info.filename!r} is damaged: {exc}", hint=_DAMAGED_HINT
            ) from None
        entries[entry] = content
    return entries


def _checked_name(filename: str, root: str, name: str) -> str:
    if not filename.startswith(root + "/"):
        _refuse(name, f"the entry {filename!r} is outside the archive's folder {root!r}")
    rest = filename[len(root) + 1 :]
    parts = PurePosixPath(rest).parts
    if (
        not rest
        or "\\" in filename
        or "\x00" in filename
        or filename.startswith("/")
        or any(p in ("", ".", "..") for p in rest.split("/"))
        or not parts
    ):
        _refuse(name, f"the entry name {filename!r} is not a plain relative path")
    return rest


# -- one exported program --------------------------------------------------------------------


def _audit_model(entries: dict[str, bytes], model: str, name: str, result: Pt2Audit) -> set[str]:
    """Audit ``models/<model>.json`` and its payload files; return the entries it uses."""
    program_entry = f"models/{model}.json"
    weights_entry = f"data/weights/{model}_weights_config.json"
    constants_entry = f"data/constants/{model}_constants_config.json"
    inputs_entry = f"data/sample_inputs/{model}.pt"
    for needed in (weights_entry, constants_entry, inputs_entry):
        if needed not in entries:
            raise FormatError(f"{name} lacks {needed!r}", hint=_DAMAGED_HINT)
    used = {program_entry, weights_entry, constants_entry, inputs_entry}
    used |= _audit_payload_config(entries, weights_entry, "data/weights/", _WEIGHT_FILE, name)
    used |= _audit_payload_config(entries, constants_entry, "data/constants/", _CONSTANT_FILE, name)
    result.weights += len([u for u in used if u.startswith("data/weights/weight_")])
    result.constants += len([u for u in used if u.startswith("data/constants/tensor_")])
    program = _json(entries[program_entry], program_entry, name)
    _audit_program(program, program_entry, name, result)
    _audit_sample_inputs(entries[inputs_entry], inputs_entry, name)
    return used


def _audit_payload_config(
    entries: dict[str, bytes], entry: str, folder: str, pattern: re.Pattern[str], name: str
) -> set[str]:
    config = _json(entries[entry], entry, name)
    items = config.get("config") if isinstance(config, dict) else None
    if not isinstance(items, dict):
        raise FormatError(f"{name}: {entry} is not a payload config", hint=_DAMAGED_HINT)
    used: set[str] = set()
    for fqn, meta in items.items():
        if not isinstance(meta, dict):
            raise FormatError(f"{name}: {entry} entry {fqn!r} is malformed", hint=_DAMAGED_HINT)
        path = meta.get("path_name")
        if not isinstance(path, str) or not pattern.fullmatch(path):
            _refuse(
                name,
                f"{fqn!r} in {entry} is stored as {path!r}, not a raw tensor file "
                "(custom and opaque objects are unpickled)",
            )
        if meta.get("use_pickle") is not False:
            _refuse(
                name,
                f"{fqn!r} in {entry} is stored as a pickle (use_pickle), which torch "
                "loads with a full unpickler",
            )
        if not isinstance(meta.get("tensor_meta"), dict):
            raise FormatError(f"{name}: {fqn!r} in {entry} has no tensor_meta", hint=_DAMAGED_HINT)
        if folder + path not in entries:
            raise FormatError(
                f"{name} lacks {folder + path!r} (named in {entry})", hint=_DAMAGED_HINT
            )
        _check_fqn(fqn, entry, name)
        _check_exprs(meta, f"{entry} entry {fqn!r}", name)
        if not entries[folder + path] and _claimed_elements(meta["tensor_meta"]) != 0:
            _refuse(
                name,
                f"{fqn!r} in {entry} is an empty file that claims a tensor of "
                f"{_short(meta['tensor_meta'].get('sizes'))} (torch would allocate it)",
            )
        used.add(folder + path)
    return used


def _claimed_elements(tensor_meta: dict[str, Any]) -> int | None:
    """The element count ``tensor_meta`` claims, or ``None`` when its sizes are not plain
    integers (torch then refuses it itself)."""
    count = 1
    for size in tensor_meta.get("sizes") or []:
        value = size.get("as_int") if isinstance(size, dict) else None
        if not isinstance(value, int):
            return None
        if value == 0:
            return 0
        count *= max(value, 1)
    return count


def _audit_program(program: Any, entry: str, name: str, result: Pt2Audit) -> None:
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise FormatError(
            f"{name}: {entry} is not a serialized exported program", hint=_DAMAGED_HINT
        )
    if program.get("guards_code"):
        _refuse(name, f"{entry} carries guards_code, which torch compiles into Python code")
    verifiers = program.get("verifiers", [])
    if not isinstance(verifiers, list) or not set(verifiers) <= _VERIFIERS:
        _refuse(name, f"{entry} asks for verifiers {verifiers!r}")
    ranges = program.get("range_constraints", {})
    if not isinstance(ranges, dict) or not all(
        _SYMBOL.fullmatch(str(k))
        and isinstance(v, dict)
        and all(isinstance(b, int) or b is None for b in v.values())
        for k, v in ranges.items()
    ):
        _refuse(name, f"{entry} has range constraints that are not symbol: integer bounds")
    module = program["graph_module"]
    _check_names(module, entry, name)
    _check_exprs(program, entry, name)
    _check_custom_objects(program, entry, name)
    graph = module.get("graph")
    if not isinstance(graph, dict):
        raise FormatError(f"{name}: {entry} has no graph", hint=_DAMAGED_HINT)
    for arg in graph.get("inputs", []):
        if not (isinstance(arg, dict) and set(arg) == {"as_tensor"}):
            _refuse(
                name,
                f"{entry}: the graph takes an input that is not a tensor ({_short(arg)}); "
                "torch builds guard code from such values",
            )
    _audit_signature(module.get("signature"), entry, name)
    for call in module.get("module_call_graph", []) or []:
        signature = call.get("signature") if isinstance(call, dict) else None
        if isinstance(signature, dict):
            for key in ("in_spec", "out_spec"):
                _check_treespec(signature.get(key), f"{entry} {key}", name)
            arg_names = signature.get("forward_arg_names") or []
            if not isinstance(arg_names, list):
                raise FormatError(
                    f"{name}: {entry} has malformed forward_arg_names", hint=_DAMAGED_HINT
                )
            for arg_name in arg_names:
                _check_name(arg_name, f"{entry} forward_arg_names", name)
    for graph_dict in _graphs(graph):
        for node in graph_dict.get("nodes", []):
            _audit_node(node, entry, name, result)


def _audit_signature(signature: Any, entry: str, name: str) -> None:
    specs = signature.get("input_specs", []) if isinstance(signature, dict) else []
    for spec in specs:
        kinds = set(spec) if isinstance(spec, dict) else {"?"}
        if not kinds <= _INPUT_SPECS:
            _refuse(
                name,
                f"{entry}: an input is a {sorted(kinds)[0]!r}, not a tensor, parameter or buffer",
            )
        user = spec.get("user_input") if isinstance(spec, dict) else None
        if user is not None and not (
            isinstance(user, dict)
            and isinstance(user.get("arg"), dict)
            and set(user["arg"]) == {"as_tensor"}
        ):
            _refuse(name, f"{entry}: a user input is not a tensor ({_short(user)})")


def _graphs(graph: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """``graph`` and every subgraph passed to a node (``as_graph`` arguments), iteratively."""
    pending = [graph]
    while pending:
        current = pending.pop()
        yield current
        for node in current.get("nodes", []):
            for value in _walk(node.get("inputs", []) if isinstance(node, dict) else []):
                if isinstance(value, dict) and isinstance(value.get("as_graph"), dict):
                    sub = value["as_graph"].get("graph")
                    if isinstance(sub, dict):
                        pending.append(sub)


def _audit_node(node: Any, entry: str, name: str, result: Pt2Audit) -> None:
    if not isinstance(node, dict) or not isinstance(node.get("target"), str):
        raise FormatError(f"{name}: {entry} has a malformed node", hint=_DAMAGED_HINT)
    target = node["target"]
    _check_target(target, entry, name)
    result.targets.add(target)
    for value in _walk(node.get("inputs", [])):
        if isinstance(value, dict) and "as_operator" in value:
            _check_target(value["as_operator"], entry, name)
    metadata = node.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise FormatError(
            f"{name}: {entry} node {target!r} has malformed metadata", hint=_DAMAGED_HINT
        )
    stack = metadata.get("source_fn_stack")
    if stack:
        for item in str(stack).split(";"):
            parts = item.split(",")
            if len(parts) != 2 or not _reviewed_meta_target(parts[1]):
                _refuse(
                    name,
                    f"{entry}: node metadata names {item!r}, which torch resolves by "
                    "attribute lookups",
                )
    for key in ("custom", "from_node"):
        if metadata.get(key):
            _json(str(metadata[key]).encode(), f"{entry} node metadata {key}", name)


def _check_target(target: Any, entry: str, name: str) -> None:
    if not isinstance(target, str) or not _reviewed_target(target):
        _refuse(name, f"{entry} calls {target!r}, which is not a reviewed tensor operator")


def _reviewed_target(target: str) -> bool:
    if target in _PLAIN_TARGETS:
        return True
    match = _TARGET.fullmatch(target)
    if match is None:
        return False
    namespace, op, overload = match.groups()
    if "__" in target:
        return False
    if namespace == "higher_order":
        return overload is None and op in _HIGHER_ORDER
    if namespace not in _OPERATOR_NAMESPACES or overload is None:
        return False
    return not (namespace == "aten" and op in _DENIED_ATEN)


def _reviewed_meta_target(target: str) -> bool:
    """A ``source_fn_stack`` entry: torch only resolves these (never calls them); allowed are
    operators as for nodes and dotted names under ``torch.nn``/``torch`` of plain
    identifiers (module classes such as ``torch.nn.modules.linear.Linear``)."""
    if _reviewed_target(target):
        return True
    return bool(re.fullmatch(rf"torch(?:\.{_IDENT}){{1,8}}", target)) and "__" not in target


def _check_exprs(tree: Any, entry: str, name: str) -> None:
    for value in _walk(tree):
        if isinstance(value, dict) and "expr_str" in value:
            expr = value["expr_str"]
            problem = expression_problem(expr)
            if problem:
                _refuse(name, f"{entry} has the symbolic expression {_short(expr)}: {problem}")


def expression_problem(expr: Any) -> str | None:
    """Why ``expr`` is not a shape expression the audit accepts, or ``None`` if it is."""
    if not isinstance(expr, str):
        return "it is not a string"
    if len(expr) > MAX_EXPR_CHARS:
        return f"it is longer than {MAX_EXPR_CHARS} characters"
    position, depth, previous = 0, 0, ""
    # torch writes each symbol as Symbol('s77', positive=True, integer=True): that exact
    # shape (a symbol name and boolean assumptions) is read as the bare name
    stripped = _SYMBOL_CALL.sub(r"\1", expr).rstrip()
    if not stripped:
        return "it is empty"
    while position < len(stripped):
        match = _EXPR_TOKEN.match(stripped, position)
        if match is None or match.end() == position:
            return f"{stripped[position : position + 12]!r} is not shape arithmetic"
        position = match.end()
        if match.group("name") is not None:
            word = match.group("name")
            if word not in _EXPR_FUNCTIONS and not _SYMBOL.fullmatch(word):
                return f"{word!r} is not a symbol or a reviewed function"
        op = match.group("op")
        if op == "(":
            depth += 1
            if depth > MAX_EXPR_DEPTH:
                return f"it nests deeper than {MAX_EXPR_DEPTH}"
        elif op == ")":
            depth -= 1
            if depth < 0:
                return "its parentheses do not match"
        if op == "*" and previous == "*":
            return "it raises to a power ('**')"
        previous = op or ""
    return "its parentheses do not match" if depth else None


def _check_custom_objects(program: Any, entry: str, name: str) -> None:
    for value in _walk(program):
        if isinstance(value, dict):
            if value.get("custom_obj_values"):
                _refuse(name, f"{entry} holds custom (script) objects, which torch unpickles")
            if "as_custom_obj" in value:
                _refuse(name, f"{entry} passes a custom (script) object, which torch unpickles")


def _check_names(module: dict[str, Any], entry: str, name: str) -> None:
    """The rule on names fx pastes into generated source (see the module docstring), checked
    on every dict of the graph module: its graphs and subgraphs, signature and call graph."""
    for value in _walk(module):
        if not isinstance(value, dict):
            continue
        for key, item in value.items():
            if key in _NAME_FIELDS and isinstance(item, str) and item:
                _check_name(item, entry, name)
            elif key in _NAME_TABLES and isinstance(item, dict):
                for table_key in item:
                    _check_name(table_key, entry, name)
            elif key in _FQN_FIELDS and isinstance(item, str):
                _check_fqn(item, entry, name)


def _check_name(value: Any, entry: str, name: str) -> None:
    if not isinstance(value, str) or not _PLAIN_NAME.fullmatch(value) or len(value) > 200:
        _refuse(
            name,
            f"{entry} names a value {_short(value)}, not a plain identifier; torch writes "
            "these names into Python code it runs",
        )


def _check_fqn(value: Any, entry: str, name: str) -> None:
    if not isinstance(value, str) or not _FQN.fullmatch(value):
        _refuse(
            name,
            f"{entry} names a parameter, buffer or constant {_short(value)}, not dotted "
            "identifiers; torch writes these names into Python code it runs",
        )


def _check_treespec(spec: Any, what: str, name: str) -> None:
    if spec is None:
        return
    try:
        decoded = json.loads(spec) if isinstance(spec, str) else None
    except (ValueError, RecursionError):
        decoded = None
    if not isinstance(decoded, list) or len(decoded) != 2:
        raise FormatError(f"{name}: {what} is not a tree spec", hint=_DAMAGED_HINT)
    for value in _walk(decoded[1]):
        if not isinstance(value, dict) or "type" not in value:
            continue
        if value["type"] not in _TREE_TYPES:
            _refuse(
                name,
                f"{what} rebuilds outputs as {value['type']!r}; only tuples, lists and "
                "dicts are reviewed",
            )
        _tree_context(value.get("context"), what, name)
    root = decoded[1]
    children = root.get("children_spec") if isinstance(root, dict) else None
    if (
        isinstance(root, dict)
        and root.get("type") == "builtins.tuple"
        and isinstance(children, list)
        and len(children) == 2
        and isinstance(children[1], dict)
        and children[1].get("type") == "builtins.dict"
    ):
        # the keyword arguments of forward: fx writes their names into its signature
        for key in _tree_context(children[1].get("context"), what, name):
            _check_name(key, f"{what} keyword argument", name)


def _tree_context(context: Any, what: str, name: str) -> list[Any]:
    """A tree-spec node's context, decoded: ``null`` or a list of dict keys (strings or
    integers). torch decodes it with a hook that imports the module any JSON object in it
    names (``{"__enum__": ..., "fqn": "module:Name"}``), so objects are refused."""
    if context is None:
        return []
    try:
        decoded = json.loads(context) if isinstance(context, str) else context
    except (ValueError, RecursionError):
        raise FormatError(f"{name}: {what} has a malformed context", hint=_DAMAGED_HINT) from None
    if decoded is None:
        return []
    if not isinstance(decoded, list) or not all(isinstance(key, (str, int)) for key in decoded):
        _refuse(
            name,
            f"{what} has the context {_short(context)}, not a list of keys; torch decodes "
            "objects in it by importing the module they name",
        )
    return decoded


def _audit_sample_inputs(data: bytes, entry: str, name: str) -> None:
    """torch reads this with weights_only=True and, if that fails, with a full unpickle: it
    is accepted only if the weights-only read succeeds here, on the same bytes."""
    import pickle

    try:
        import torch
    except ImportError:  # pragma: no cover - the export backend requires torch
        _refuse(name, f"{entry} can be checked only with torch installed")
    if len(data) == 0:
        return  # torch reads an empty entry as {} without unpickling
    try:
        loaded = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "refused"
        _refuse(
            name,
            f"{entry} holds more than tensors (torch's weights-only reader: "
            f"{first[:200]}), and torch would then unpickle it fully",
        )
    except Exception as exc:  # torch raises RuntimeError, EOFError, ... for damaged zips
        _refuse(
            name,
            f"{entry} does not load with torch's weights-only reader "
            f"({type(exc).__name__}), and torch would then unpickle it fully",
        )
    if not isinstance(loaded, (tuple, dict)):
        raise FormatError(f"{name}: {entry} is not a tuple of example inputs", hint=_DAMAGED_HINT)


# -- helpers ---------------------------------------------------------------------------------


def _walk(tree: Any) -> Iterator[Any]:
    """Every dict, list and leaf in ``tree``, iteratively (no recursion limit to hit)."""
    pending = [tree]
    while pending:
        value = pending.pop()
        yield value
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)


def _json(data: bytes, entry: str, name: str) -> Any:
    if len(data) > MAX_JSON_BYTES:
        _refuse(name, f"{entry} is larger than {MAX_JSON_BYTES} bytes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise FormatError(
            f"{name}: {entry} is not valid JSON ({exc})"[:300], hint=_DAMAGED_HINT
        ) from None


def _utf8(data: bytes, entry: str, name: str) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{name}: {entry} is not UTF-8 text", hint=_DAMAGED_HINT) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _refuse(name: str, reason: str) -> NoReturn:
    raise UntrustedArtifactError(
        f"refusing to load {name}: {reason}; the .pt2 audit accepts only plain tensor "
        "programs (see docs/pytorch.md)",
        hint=_TRUST_HINT,
    )


__all__ = [
    "MAX_ENTRIES",
    "PT2_MARKER",
    "Pt2Audit",
    "audit_pt2",
    "expression_problem",
    "looks_like_pt2",
]
