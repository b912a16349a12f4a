"""The ``export`` backend: a module frozen by ``torch.export`` into one ``.pt2`` file.

Save traces the module on the ``example=`` batch (``torch.export.export``, non-strict) with a
dynamic batch dimension (and any dimension named in ``dynamic={index: "name"}``) and writes
the program with ``torch.export.save``: the weights as raw tensor bytes, the computation as a
JSON graph of ATen operators. Load reads it back with ``torch.export.load`` and returns
``ExportedProgram.module()``, a ``GraphModule`` that runs without the model's class.

``torch.export.load`` on its own would unpickle pickled weights, custom objects and (after a
failed weights-only attempt) the sample inputs, resolve any ``torch.*`` attribute as a graph
target, ``sympify`` (``eval``) symbolic expressions, ``exec`` guard code and load AOTInductor
shared libraries (see :mod:`persistkit.safety.pt2_audit`). So an archive that is not trusted
(``trusted=True`` or your own seal) is first checked by :func:`persistkit.safety.audit_pt2`,
which accepts only plain tensor programs, and torch then reads exactly the audited bytes from
memory. That makes this backend ``safe``: a load never runs code from the file.
"""

from __future__ import annotations

import io
import linecache
import re
import sysconfig
import traceback
from pathlib import Path
from typing import Any

from persistkit import Backend
from persistkit.errors import CannotSaveError, FormatError, PersistkitError
from persistkit_export.declared import EXPORT_INFO, is_exported_program
from persistkit_export.sniff import zip_kind

#: the name of the batch dimension (dimension 0 of the input) in the exported program
BATCH = "batch"
_INDEX_LAYERS = ("Embedding", "EmbeddingBag")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_TRACE_LINE = re.compile(r'File "([^"]+)", line (\d+), in [^\n]+\n\s+([^\n]+)')


class ExportBackend(Backend):
    """``torch.export`` programs in ``.pt2`` archives."""

    info = EXPORT_INFO
    file_name = "model.pt2"

    def can_save(self, model: Any) -> bool:
        return _is_torch_module(model) or is_exported_program(model)

    def sniff(self, path: Path, head: bytes) -> bool:
        return super().sniff(path, head) or zip_kind(path, head) == "pt2"

    def save_with_example(
        self, model: Any, path: Path, options: dict[str, Any], example: Any
    ) -> None:
        import torch

        if is_exported_program(model):  # exported already: written as it is
            torch.export.save(model, str(path))
            options["torch_version"] = torch.__version__
            return
        if not _is_torch_module(model):
            raise CannotSaveError(
                f"the export backend saves torch nn.Module models, not a "
                f"{type(model).__qualname__}",
                hint="pick another backend (`persistkit backends` lists them)",
            )
        if example is None:
            raise CannotSaveError(
                "the export backend traces the model, so it needs an input batch",
                hint="pass example=<a small batch of real inputs>",
            )
        x = example_tensor(model, example)
        dims = dynamic_dims(options.get("dynamic"), x.ndim)
        x = _batch_of_two_or_more(x, dims)
        shapes = ({index: torch.export.Dim(name) for index, name in dims.items()},)
        try:
            program = torch.export.export(model, (x,), dynamic_shapes=shapes, strict=False)
        except Exception as exc:  # torch raises many kinds; each means "cannot export this"
            raise cannot_export(model, exc, dims) from None
        torch.export.save(program, str(path))
        options["dynamic"] = {str(index): name for index, name in dims.items()}
        options["torch_version"] = torch.__version__

    def load(self, path: Path, manifest: Any, options: dict[str, Any], policy: Any) -> Any:
        return self.load_path(path, manifest, options, policy)

    def load_payload(
        self, payload: Any, manifest: Any, options: dict[str, Any], policy: Any
    ) -> Any:
        data = payload.read_bytes()  # the checked bytes; audited and loaded from memory
        if not policy.trust_all:
            from persistkit.safety import audit_pt2

            audit_pt2(data, name=payload.name)
        return exported_module(data, payload.name)


def exported_module(data: bytes, name: str) -> Any:
    """``torch.export.load`` of ``data`` (a whole .pt2 file), as a runnable module."""
    import torch

    try:
        program = torch.export.load(io.BytesIO(data))
        # no guard function: torch would build it by exec of generated code; the module's
        # input check (a pre-hook) still refuses inputs of the wrong shape
        return program.module(check_guards=False)
    except PersistkitError:
        raise
    except Exception as exc:  # a damaged archive fails anywhere in torch's reader
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise FormatError(
            f"{name} is not a readable torch.export archive: {type(exc).__name__}: {first}",
            hint="the file is truncated, damaged or from an incompatible torch version; "
            "restore it or export the model again",
        ) from None


def example_tensor(model: Any, example: Any) -> Any:
    """``example`` (a numpy array) as the tensor the model is traced with: floating inputs,
    and integer inputs of models without an embedding, in the dtype of the module's floating
    parameters (the rule ``persistkit.predict`` applies to inputs)."""
    import numpy as np
    import torch

    x = torch.from_numpy(np.array(example, copy=True, order="C"))
    dtype = next(
        (t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()),
        None,
    )
    takes_indices = any(type(m).__name__ in _INDEX_LAYERS for m in model.modules())
    if dtype is not None and (x.is_floating_point() or not takes_indices):
        x = x.to(dtype=dtype)
    return x


def dynamic_dims(requested: Any, ndim: int) -> dict[int, str]:
    """Dimension index -> name of every dynamic input dimension: 0 is always ``batch``;
    ``requested`` (the ``dynamic=`` option, ``{1: "seq"}``, keys may be strings of digits)
    adds others."""
    if ndim < 1:
        raise CannotSaveError(
            "example= is a single number; the export backend needs a batch (an array whose "
            "first dimension counts the inputs)",
            hint="pass example=<an array of shape (batch, ...)>",
        )
    dims = {0: BATCH}
    if requested is None:
        return dims
    if not isinstance(requested, dict):
        raise CannotSaveError(
            f"dynamic= must map input dimensions to names, like {{1: 'seq'}}, not {requested!r}",
            hint="pass dynamic={dimension_index: 'name'} (dimension 0, the batch, is always "
            "dynamic)",
        )
    for key, name in requested.items():
        index = int(key) if isinstance(key, str) and key.isdigit() else key
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < ndim:
            raise CannotSaveError(
                f"dynamic= names dimension {key!r}, but example= has dimensions 0 to {ndim - 1}",
                hint="use the index of an input dimension, like dynamic={1: 'seq'}",
            )
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise CannotSaveError(
                f"dynamic= names dimension {index} {name!r}; names are identifiers",
                hint="use a plain name, like dynamic={1: 'seq'}",
            )
        if index == 0:
            continue  # the batch is always dynamic, under its own name
        if name in dims.values():
            raise CannotSaveError(
                f"dynamic= uses the name {name!r} twice (or for the batch)",
                hint="give each dynamic dimension its own name",
            )
        dims[index] = name
    return dict(sorted(dims.items()))


def _batch_of_two_or_more(x: Any, dims: dict[int, str]) -> Any:
    """torch.export specializes dimensions of size 0 or 1 to constants, so a dynamic
    dimension needs an example of size 2 or more. A batch of one is traced as that item
    twice (the rows are independent in eval mode); other dimensions cannot be padded."""
    import torch

    for index, name in dims.items():
        if index != 0 and x.shape[index] < 2:
            raise CannotSaveError(
                f"dimension {index} ({name!r}) of example= has size {x.shape[index]}; "
                "torch.export fixes dimensions of size 0 or 1 to that size",
                hint=f"pass an example whose dimension {index} has size 2 or more",
            )
    if x.shape[0] == 0:
        raise CannotSaveError(
            "example= is an empty batch; the model cannot be traced without an input",
            hint="pass example=<a small batch of real inputs>",
        )
    return torch.cat([x, x]) if x.shape[0] == 1 else x


def cannot_export(model: Any, exc: BaseException, dims: dict[int, str]) -> CannotSaveError:
    """The error for a module torch.export cannot trace, naming the line of the user's code
    where tracing failed (from torch's message, else the innermost frame outside torch)."""
    kind = type(exc).__name__
    summary = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else kind
    where = _failing_line(exc)
    data_dependent = "data-dependent" in str(exc) or kind.startswith("GuardOnDataDependent")
    if data_dependent:
        why = "its control flow depends on the values of a tensor (e.g. `if x.sum() > 0:`)"
    elif "Constraints violated" in str(exc):
        named = ", ".join(f"{i} ({n!r})" for i, n in dims.items())
        why = f"the model fixes the size of a dimension marked dynamic: {named}"
    else:
        why = f"{kind}: {summary}"
    return CannotSaveError(
        f"torch.export cannot trace this {type(model).__qualname__}: {why}"
        + (f"; at {where}" if where else ""),
        hint='save it with backend="torch" (the whole module; loading it needs its class), '
        "or rewrite that line with torch.cond / tensor operations so it can be exported",
    )


def _failing_line(exc: BaseException) -> str | None:
    """``file:line: source`` of the user's code where tracing failed."""
    # torch's message ends with the call that raised; the last one counts
    found = list(_TRACE_LINE.finditer(str(exc)))
    match = found[-1] if found else None
    if match is not None and not _is_library(match.group(1)):
        return f"{match.group(1)}:{match.group(2)}: {match.group(3).strip()}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _is_library(f.filename)]
    if not frames:
        return None
    frame = frames[-1]
    source = (frame.line or linecache.getline(frame.filename, frame.lineno or 0)).strip()
    return f"{frame.filename}:{frame.lineno}: {source}"


def _is_library(filename: str) -> bool:
    """Frames of torch, persistkit, this plugin or the standard library are not the user's."""
    lowered = filename.replace("\\", "/")
    markers = ("/torch/", "/persistkit/", "/persistkit_export/", "/persistkit_torch/")
    stdlib = sysconfig.get_paths().get("stdlib", "\0")
    return any(m in lowered for m in markers) or lowered.startswith(stdlib) or "<" in filename


def _is_torch_module(obj: Any) -> bool:
    if isinstance(obj, type):
        return False
    return any(
        c.__module__ == "torch.nn.modules.module" and c.__name__ == "Module"
        for c in type(obj).__mro__
    )
