"""The ``mlflow`` backend: read an MLflow model folder (one holding an ``MLmodel`` file)
without MLflow installed. Read only: persistkit never writes MLflow folders.

``MLmodel`` is parsed as YAML with ``yaml.safe_load`` (plain data, no tags that build
objects). Then one flavor is read, never MLflow's own loader (it would unpickle freely):

- ``sklearn``: the ``pickled_model`` file; ``pickle``/``cloudpickle`` payloads go through
  persistkit's restricted unpickler (``policy.unpickle``), ``skops`` payloads through the
  skops backend's audited loader. The folder's own ``skops_trusted_types`` is not honoured:
  a file cannot vouch for itself, only ``trusted=`` can.
- ``pytorch``: ``data/model.pth`` (a whole module or a state dict written by ``torch.save``)
  through persistkit's torch reader (``policy.load_torch_payload``); ``data/model.pt2``
  (``torch.export``) is audited (:func:`persistkit.safety.audit_pt2`) and loaded from the
  audited bytes.

A folder whose only flavor is ``python_function`` holds custom Python code (its
``loader_module``), which persistkit does not run: it is refused. Every path ``MLmodel``
names must be a file inside the folder. The folder's pinned requirements
(``requirements.txt``, ``conda.yaml``, ``python_env.yaml``, the flavor's own version) are
read by :func:`mlflow_requirements` for the environment check.
"""

from __future__ import annotations

import io
import re
from pathlib import Path, PurePosixPath
from typing import Any

import persistkit
from persistkit import BackendInfo
from persistkit.errors import CannotSaveError, FormatError, PersistkitError

BACKEND = "mlflow"
MLMODEL = "MLmodel"
#: flavors this plugin reads, in the order it prefers them
FLAVORS = ("sklearn", "pytorch")
MAX_MLMODEL_BYTES = 1024 * 1024
#: distributions MLflow pins that loading through persistkit does not need
NOT_NEEDED = frozenset({"mlflow", "mlflow-skinny", "mlflow-tracing"})
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*===?\s*([^\s;,#]+)")
_CONDA_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==?\s*([^\s=]+)")


class MlflowPlugin:
    """Reads MLflow model folders (sklearn and pytorch flavors)."""

    info = BackendInfo(
        BACKEND,
        description="MLflow model folders (MLmodel): sklearn and pytorch flavors, read "
        "through persistkit's restricted readers; read only",
        restricted=True,
        requires=("yaml",),
        extra="mlflow",
        save_options=(),
        load_options=(),
    )

    @persistkit.hookimpl
    def persistkit_backends(self) -> list[BackendInfo]:
        return [self.info]

    @persistkit.hookimpl
    def persistkit_sniff(self, path: Path, head: bytes) -> str | None:
        if head or not path.is_dir():
            return None
        try:
            return BACKEND if (path / MLMODEL).lstat().st_mode & 0o170000 == 0o100000 else None
        except OSError:
            return None

    @persistkit.hookimpl
    def persistkit_can_save(self, model: Any, backend: str) -> bool | None:
        return False if backend == BACKEND else None

    @persistkit.hookimpl
    def persistkit_save(
        self, model: Any, backend: str, directory: Path, options: dict[str, Any], example: Any
    ) -> list[str] | None:
        if backend != BACKEND:
            return None
        raise CannotSaveError(
            "the mlflow backend reads MLflow model folders; persistkit does not write them",
            hint='save with one of persistkit\'s own backends (backend="skops" or "joblib" '
            'for scikit-learn, "export" or "safetensors" for PyTorch); '
            "mlflow.<flavor>.save_model writes MLflow folders",
        )

    @persistkit.hookimpl
    def persistkit_load(
        self,
        backend: str,
        directory: Path,
        manifest: Any,
        options: dict[str, Any],
        policy: Any,
        files: Any,
    ) -> Any | None:
        if backend != BACKEND:
            return None
        if files is None:
            raise FormatError(
                f"{directory} is an MLflow model folder; load it with persistkit.load",
                hint="pass the folder to persistkit.load",
            )
        mlmodel = read_mlmodel(files)
        flavors = mlmodel["flavors"]
        if "sklearn" in flavors:
            return load_sklearn(files, flavors["sklearn"], policy)
        if "pytorch" in flavors:
            return load_pytorch(files, flavors["pytorch"], policy, options)
        raise refuse_flavors(flavors)

    @persistkit.hookimpl
    def persistkit_requirements(self, backend: str, manifest: Any, files: Any) -> Any:
        """The folder's pins (distribution -> version) for the environment check."""
        return mlflow_requirements(files) if backend == BACKEND and files is not None else None


# -- MLmodel ----------------------------------------------------------------------------------


def read_mlmodel(files: Any) -> dict[str, Any]:
    """``MLmodel`` of the opened folder, parsed as plain YAML data, with a ``flavors`` map."""
    data = _text(files, MLMODEL, required=True)
    parsed = _safe_yaml(data, MLMODEL)
    if not isinstance(parsed, dict) or not isinstance(parsed.get("flavors"), dict):
        raise FormatError(
            f"{MLMODEL} lists no flavors, so it is not an MLflow model description",
            hint="point at the folder mlflow.<flavor>.save_model wrote",
        )
    return parsed


def refuse_flavors(flavors: dict[str, Any]) -> FormatError:
    """The error for a folder with no flavor persistkit reads."""
    names = ", ".join(sorted(str(f) for f in flavors)) or "none"
    if set(flavors) <= {"python_function"}:
        loader = (flavors.get("python_function") or {}).get("loader_module", "custom code")
        return FormatError(
            f"this MLflow model has only the python_function flavor: loading it means "
            f"running its own Python code ({loader}), which persistkit does not do",
            hint="load it with mlflow.pyfunc.load_model if you trust its source, or save "
            "the underlying model with persistkit",
        )
    return FormatError(
        f"this MLflow model's flavors ({names}) are not ones persistkit reads "
        f"({', '.join(FLAVORS)})",
        hint="load it with MLflow if you trust its source, or save the underlying model "
        "with persistkit",
    )


def member(files: Any, name: Any, *, what: str) -> Any:
    """The opened file ``name`` (a path ``MLmodel`` gave) of the folder: a relative path
    inside it, never absolute or climbing out with ``..``."""
    if not isinstance(name, str) or not name:
        raise FormatError(f"{MLMODEL} gives no valid path for the {what}")
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:", name):
        raise FormatError(
            f"{MLMODEL} points the {what} at {name!r}, outside the model folder; persistkit "
            "reads only files inside it",
            hint="do not load this folder; it was damaged or crafted",
        )
    key = pure.as_posix().removeprefix("./")
    if key not in files.files:
        raise FormatError(
            f"the {what} {key!r} named in {MLMODEL} is missing from the folder",
            hint="the folder is incomplete; copy the whole MLflow model folder",
        )
    return files[key]


# -- flavors ----------------------------------------------------------------------------------


def load_sklearn(files: Any, flavor: Any, policy: Any) -> Any:
    """The ``sklearn`` flavor's model: pickled payloads through the restricted unpickler,
    skops payloads through skops' audit with persistkit's policy."""
    if not isinstance(flavor, dict):
        raise FormatError(f"the sklearn flavor in {MLMODEL} is not a mapping")
    payload = member(files, flavor.get("pickled_model"), what="sklearn model file")
    kind = flavor.get("serialization_format", "cloudpickle")
    what = f"MLflow sklearn model {payload.name}"
    if kind == "skops":
        from persistkit_skops import load_skops_bytes

        return load_skops_bytes(payload.read_bytes(), policy, name=payload.name)
    if kind not in ("pickle", "cloudpickle"):
        raise FormatError(
            f"the sklearn model {payload.name} is in the serialization format {kind!r}, "
            "which persistkit does not read",
            hint="persistkit reads MLflow's pickle, cloudpickle and skops formats",
        )
    if not policy.trust_all:
        return policy.unpickle(payload.named_bytes(), what=what)
    import pickle  # trusted: cloudpickle writes plain pickle streams, pickle reads them

    try:
        return pickle.loads(payload.read_bytes())
    except (EOFError, ValueError, IndexError, KeyError, pickle.UnpicklingError) as exc:
        raise _damaged(payload.name, exc) from None


def load_pytorch(files: Any, flavor: Any, policy: Any, options: dict[str, Any]) -> Any:
    """The ``pytorch`` flavor's model: ``model.pth`` through persistkit's torch reader,
    ``model.pt2`` audited first."""
    if not isinstance(flavor, dict):
        raise FormatError(f"the pytorch flavor in {MLMODEL} is not a mapping")
    folder = flavor.get("model_data", "data")
    if not isinstance(folder, str):
        raise FormatError(f"{MLMODEL} gives no valid model_data folder")
    base = folder.rstrip("/")
    for name in ("model.pth", "model.pt2"):
        candidate = f"{base}/{name}"
        key = PurePosixPath(candidate).as_posix().removeprefix("./")
        if key in files.files or ".." in PurePosixPath(candidate).parts:
            payload = member(files, candidate, what="pytorch model file")
            break
    else:
        raise FormatError(
            f"the pytorch model folder {folder!r} holds neither model.pth nor model.pt2",
            hint="the folder is incomplete; copy the whole MLflow model folder",
        )
    map_location = options.get("map_location", "cpu")
    if payload.name.endswith(".pt2"):
        return _exported(payload, policy)
    if not policy.trust_all:
        return policy.load_torch_payload(payload, map_location=map_location)
    import torch

    try:
        return torch.load(payload.bound_path(), map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise _damaged(payload.name, exc) from None


def _exported(payload: Any, policy: Any) -> Any:
    import torch

    from persistkit.safety import audit_pt2

    data = payload.read_bytes()
    if not policy.trust_all:
        audit_pt2(data, name=payload.name)
    try:
        # no guard function: torch would build it by exec of generated code
        return torch.export.load(io.BytesIO(data)).module(check_guards=False)
    except PersistkitError:
        raise
    except Exception as exc:  # a damaged archive fails anywhere in torch's reader
        raise _damaged(payload.name, exc) from None


# -- requirements -----------------------------------------------------------------------------


def mlflow_requirements(files: Any) -> dict[str, str]:
    """The exact versions an MLflow folder pins, distribution -> version: ``python``, then
    ``conda.yaml``'s pip list, ``requirements.txt`` and the flavor's own library version
    (``sklearn_version``, ``pytorch_version``), later ones winning. Only exact pins count
    (``==``); local labels (``+cpu``) are dropped; MLflow itself is left out (persistkit
    loads the folder without it). A file that is missing or unreadable adds nothing."""
    pins: dict[str, str] = {}
    python_env = _yaml_file(files, "python_env.yaml")
    if isinstance(python_env, dict) and python_env.get("python"):
        pins["python"] = str(python_env["python"])
    conda = _yaml_file(files, "conda.yaml")
    for dep in conda.get("dependencies", []) if isinstance(conda, dict) else []:
        if isinstance(dep, str):
            found = _CONDA_PIN.match(dep)
            if found and found.group(1).lower() == "python":
                pins.setdefault("python", found.group(2))
        elif isinstance(dep, dict) and isinstance(dep.get("pip"), list):
            _add_pins(pins, (line for line in dep["pip"] if isinstance(line, str)))
    requirements = _text(files, "requirements.txt", required=False)
    if requirements is not None:
        _add_pins(pins, requirements.decode("utf-8", "replace").splitlines())
    try:
        flavors = read_mlmodel(files)["flavors"]
    except PersistkitError:
        flavors = {}
    for flavor, key, dist in (
        ("sklearn", "sklearn_version", "scikit-learn"),
        ("pytorch", "pytorch_version", "torch"),
    ):
        version = (flavors.get(flavor) or {}).get(key) if isinstance(flavors, dict) else None
        if version:
            pins[dist] = _public(str(version))
    return pins


def _add_pins(pins: dict[str, str], lines: Any) -> None:
    for line in lines:
        found = _PIN.match(line)
        if found is None:
            continue
        dist = re.sub(r"[-_.]+", "-", found.group(1)).lower()
        if dist not in NOT_NEEDED:
            pins[dist] = _public(found.group(2))


def _public(version: str) -> str:
    return version.split("+", 1)[0]


# -- reading ----------------------------------------------------------------------------------


def _text(files: Any, name: str, *, required: bool) -> bytes | None:
    if name not in files.files:
        if required:
            raise FormatError(f"the folder has no {name}", hint="point at an MLflow model folder")
        return None
    opened = files[name]
    if opened.size > MAX_MLMODEL_BYTES:
        if required:
            raise FormatError(f"{name} is {opened.size} bytes; no MLflow {name} is that large")
        return None
    return opened.read_bytes()


def _yaml_file(files: Any, name: str) -> Any:
    data = _text(files, name, required=False)
    if data is None:
        return None
    try:
        return _safe_yaml(data, name)
    except FormatError:
        return None


def _safe_yaml(data: bytes, name: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(data)  # plain data only: no tags that build Python objects
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise FormatError(
            f"{name} is not readable YAML: {first}",
            hint="the MLflow folder is damaged; copy it again from where it was logged",
        ) from None


def _damaged(name: str, exc: BaseException) -> FormatError:
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return FormatError(
        f"{name} is not a readable model file: {type(exc).__name__}: {first}".rstrip(": "),
        hint="the file is truncated or damaged; copy the MLflow folder again",
    )


plugin = MlflowPlugin()

__all__ = [
    "BACKEND",
    "MlflowPlugin",
    "load_pytorch",
    "load_sklearn",
    "mlflow_requirements",
    "plugin",
    "read_mlmodel",
]
