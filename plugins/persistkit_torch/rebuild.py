"""Rebuilding an ``nn.Module`` from a recipe (class, constructor arguments) and its weights.

Backends that store only weights (``safetensors``, ``torch`` with ``mode="state_dict"``)
record a :class:`ModuleRecipe` in the manifest's backend options at save time and use it at
load time. The recipe comes from an untrusted manifest when the artifact is not sealed, so the
class (or factory) it names is imported only when the trust policy allows it or the user passed
the class themselves. Importing torch happens inside the functions that need it.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, NamedTuple

from persistkit.errors import (
    ArtifactError,
    CannotSaveError,
    ImportCode,
    InputError,
    ManifestError,
    OptionError,
    UntrustedArtifactError,
)
from persistkit_torch.detect import importable_name

RECIPE_KEY = "module"
# torch's conventional "factory kwargs": the rebuild picks the device, the weights the dtype
_SKIPPED_PARAMS = frozenset({"device", "dtype"})


class ModuleRecipe(NamedTuple):
    """How to rebuild a module: ``module.qualname`` of its class (and of an optional factory
    called instead of the class), JSON constructor arguments, and groups of state-dict keys
    that name one shared tensor (the first key of each group is the one stored)."""

    module: str
    qualname: str
    init_kwargs: dict[str, Any]
    factory: str | None = None
    tied: tuple[tuple[str, ...], ...] = ()

    @property
    def class_path(self) -> str:
        return f"{self.module}.{self.qualname}"

    def to_json(self) -> dict[str, Any]:
        return {
            "class": {"module": self.module, "qualname": self.qualname},
            "init_kwargs": self.init_kwargs,
            "factory": self.factory,
            "tied": [list(group) for group in self.tied],
        }

    @classmethod
    def from_json(cls, value: Any) -> ModuleRecipe:
        """Validate a recipe read from a (possibly untrusted) manifest."""
        try:
            klass = value["class"]
            module, qualname = klass["module"], klass["qualname"]
            init_kwargs = value.get("init_kwargs") or {}
            factory = value.get("factory")
            tied = value.get("tied") or []
            ok = (
                _is_dotted(module)
                and _is_dotted(qualname)
                and isinstance(init_kwargs, dict)
                and (factory is None or _is_dotted(factory))
                and all(isinstance(g, list) and all(isinstance(k, str) for k in g) for g in tied)
            )
        except (KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            raise ManifestError(
                f"the manifest's backend option {RECIPE_KEY!r} is not a valid module recipe",
                hint="the artifact was not written by persistkit or was tampered with",
            )
        return cls(module, qualname, dict(init_kwargs), factory, tuple(tuple(g) for g in tied))


def _is_dotted(value: Any) -> bool:
    """A dotted import path of ASCII identifiers (``pkg.module.Class``)."""
    return (
        isinstance(value, str)
        and len(value) <= 500
        and value.isascii()
        and all(part.isidentifier() for part in value.split("."))
    )


# --- save side -------------------------------------------------------------------------------


def recipe_for(model: Any, options: dict[str, Any], *, backend: str) -> ModuleRecipe:
    """The recipe that rebuilds ``model``, from ``init_kwargs=``/``factory=`` in ``options`` or
    recovered from attributes named like ``__init__`` parameters. Checks that the recipe builds
    a module with the same structure and weight shapes; raises :class:`CannotSaveError`
    (naming ``init_kwargs=`` and ``factory=``) when it does not."""
    cls = type(model)
    class_path = importable_name(cls)
    if class_path is None:
        raise CannotSaveError(
            f"backend {backend!r} stores weights plus the import path of the model's class, "
            f"but {cls.__qualname__} is defined in {cls.__module__} and cannot be imported "
            "when loading",
            hint="move the class into an importable module, or save it with backend='torch' "
            "(whole module; loading it then runs code from the file)",
        )
    factory = options.get("factory")
    factory_path = _factory_path(factory) if factory is not None else None
    given = options.get("init_kwargs")
    if given is not None:
        init_kwargs = _json_kwargs(given)
    elif factory is not None:
        init_kwargs = {}
    else:
        init_kwargs = recover_init_kwargs(model)
    recipe = ModuleRecipe(
        cls.__module__,
        cls.__qualname__,
        init_kwargs,
        factory_path,
        tied_groups(model.state_dict(keep_vars=True)),
    )
    _check_rebuilds(model, recipe, factory if callable(factory) else None)
    return recipe


def record_recipe(model: Any, options: dict[str, Any], *, backend: str) -> ModuleRecipe:
    """:func:`recipe_for` ``model``, recorded in ``options`` under ``RECIPE_KEY`` in place of the
    ``init_kwargs=``/``factory=`` it was made from (``api.save`` writes the backend options
    to the manifest after the save hook, so the load hook gets the recipe back)."""
    recipe = recipe_for(model, options, backend=backend)
    options.pop("init_kwargs", None)
    options.pop("factory", None)
    options[RECIPE_KEY] = recipe.to_json()
    return recipe


def recover_init_kwargs(model: Any) -> dict[str, Any]:
    """Constructor arguments read back from attributes named like ``__init__`` parameters
    (the scikit-learn convention). A parameter whose attribute is missing or not JSON keeps
    its default; one without a default makes this raise :class:`CannotSaveError`."""
    cls = type(model)
    try:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        params = []
    kwargs: dict[str, Any] = {}
    missing: list[str] = []
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            if param.kind is param.VAR_POSITIONAL:
                missing.append(f"*{param.name}")
            continue
        if param.name in _SKIPPED_PARAMS:
            continue
        value = _to_json(getattr(model, param.name, _NOT_JSON))
        if value is not _NOT_JSON:
            kwargs[param.name] = value
        elif param.default is param.empty:
            missing.append(param.name)
    if missing:
        raise CannotSaveError(
            f"cannot tell how to construct {cls.__qualname__} again: its constructor "
            f"argument(s) {', '.join(missing)} are not kept as JSON attributes of the same name",
            hint=f"pass init_kwargs={{...}} (the JSON arguments of {cls.__qualname__}(...)) or "
            "factory=<importable function returning the module>, or save with backend='torch'",
        )
    return kwargs


_NOT_JSON: Any = object()


def _to_json(value: Any) -> Any:
    """``value`` as plain JSON (tuples become lists), or ``_NOT_JSON``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and type(value) in (int, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else _NOT_JSON
    if isinstance(value, (list, tuple)):
        items = [_to_json(v) for v in value]
        return _NOT_JSON if any(v is _NOT_JSON for v in items) else items
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        converted = {k: _to_json(v) for k, v in value.items()}
        return _NOT_JSON if any(v is _NOT_JSON for v in converted.values()) else converted
    return _NOT_JSON


def _json_kwargs(given: Any) -> dict[str, Any]:
    value = _to_json(given) if isinstance(given, dict) else _NOT_JSON
    if value is _NOT_JSON:
        raise CannotSaveError(
            "init_kwargs= must be a dict of JSON values (numbers, strings, booleans, None, "
            "lists and dicts of them)",
            hint="pass modules, tensors and functions through factory=<importable function> "
            "instead",
        )
    return dict(value)


def _factory_path(factory: Any) -> str:
    path = factory if isinstance(factory, str) else importable_name(factory)
    if not callable(factory) and not isinstance(factory, str):
        path = None
    if path is None or not _is_dotted(path):
        raise CannotSaveError(
            f"factory={factory!r} cannot be recorded as an import path (it must be a function "
            "defined at the top level of an importable module, not in __main__ or a closure)",
            hint="move the factory into a module, or pass init_kwargs= instead",
        )
    return path


def _check_rebuilds(model: Any, recipe: ModuleRecipe, factory: Any) -> None:
    import torch

    builder = factory if factory is not None else type(model)
    try:
        with torch.device("meta"):
            rebuilt = builder(**recipe.init_kwargs)
    except Exception as exc:
        raise CannotSaveError(
            f"{_builder_name(recipe)}(**{recipe.init_kwargs!r}) fails, so the model could not "
            f"be rebuilt when loading: {type(exc).__name__}: {exc}",
            hint="pass init_kwargs= with the arguments that construct this model, or factory=",
        ) from None
    problem = _difference(model, rebuilt)
    if problem:
        raise CannotSaveError(
            f"{_builder_name(recipe)}(**{recipe.init_kwargs!r}) builds a different module than "
            f"the one being saved ({problem})",
            hint="pass init_kwargs= with the arguments that construct this model, or "
            "factory=<importable function returning it>",
        )


def _builder_name(recipe: ModuleRecipe) -> str:
    return recipe.factory or recipe.class_path


def _difference(model: Any, rebuilt: Any) -> str:
    if type(rebuilt) is not type(model):
        return f"a {type(rebuilt).__qualname__}, not a {type(model).__qualname__}"
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if want != got:
        diffs = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        shown = ", ".join(f"{k}: {want.get(k)} vs {got.get(k)}" for k in diffs[:5])
        return f"weights differ in name or shape: {shown}"
    if repr(model) != repr(rebuilt):
        return "its layers or their settings differ (compare repr())"
    return ""


def tied_groups(state: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    """Groups of keys of ``state`` that name the very same tensor view (tied weights)."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for name, tensor in state.items():
        if tensor.numel() == 0 or tensor.is_meta:
            continue
        key = (
            tensor.device,
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tuple(tensor.stride()),
            tensor.dtype,
        )
        groups.setdefault(key, []).append(name)
    return tuple(tuple(names) for names in groups.values() if len(names) > 1)


def storable_tensors(state: dict[str, Any], tied: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """``state`` with each tied group stored once, every tensor contiguous and owning its
    memory (what the safetensors format requires); values are detached."""
    aliases = {name for group in tied for name in group[1:]}
    kept = {k: v.detach() for k, v in state.items() if k not in aliases}
    by_storage: dict[tuple[Any, int], list[str]] = {}
    for name, tensor in kept.items():
        if tensor.numel():
            by_storage.setdefault((tensor.device, tensor.untyped_storage().data_ptr()), []).append(
                name
            )
    shared = {name for names in by_storage.values() if len(names) > 1 for name in names}
    return {
        name: (tensor.clone(memory_format=_contiguous()) if name in shared else tensor.contiguous())
        for name, tensor in kept.items()
    }


def _contiguous() -> Any:
    import torch

    return torch.contiguous_format


# --- load side -------------------------------------------------------------------------------


def retie_state(state: dict[str, Any], tied: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """Put the stored tensor of each tied group back under every key of the group."""
    for group in tied:
        if group[0] not in state:
            raise ArtifactError(f"tied weight {group[0]!r} is missing from the stored tensors")
        for alias in group[1:]:
            state[alias] = state[group[0]]
    return state


#: options that say how to rebuild a module (given at save, or at load for weights alone)
MODULE_OPTIONS = ("model_class", "init_kwargs", "factory")


def refuse_module_options(options: dict[str, Any], *, backend: str) -> None:
    """At save, for a dict of tensors (no module to rebuild): refuse ``init_kwargs=`` and
    ``factory=`` instead of recording options that nothing would use."""
    given = [name for name in MODULE_OPTIONS if options.get(name) is not None]
    if given:
        raise OptionError(
            f"backend {backend!r} saves this dict of tensors as it is: "
            f"{', '.join(f'{name}=' for name in given)} only apply to an nn.Module",
            hint="drop them, or save the module itself; pass model_class= (and init_kwargs=) "
            "to load() to get a module back from the weights",
        )


def wants_module(options: dict[str, Any]) -> bool:
    """True when the user asked at load for a module built from bare weights."""
    return options.get("model_class") is not None or options.get("factory") is not None


def module_from_weights(state: dict[str, Any], policy: Any, options: dict[str, Any]) -> Any:
    """Build the module the user names with ``model_class=`` (or ``factory=``) and
    ``init_kwargs=``, then load ``state`` into it strictly (mismatched keys are an error
    listing them). For a bare state dict, which records no class of its own."""
    cls = options.get("model_class")
    factory = options.get("factory")
    if cls is None and not callable(factory):
        raise InputError(
            f"factory= must be a function that returns the module, not {factory!r}",
            hint="pass the function itself, or model_class=<the class>",
        )
    recipe = ModuleRecipe(
        getattr(cls, "__module__", ""),
        getattr(cls, "__qualname__", ""),
        _user_kwargs(options.get("init_kwargs") or {}),
    )
    return build_module(recipe, state, policy, options)


def _user_kwargs(given: Any) -> dict[str, Any]:
    if not isinstance(given, dict) or not all(isinstance(k, str) for k in given):
        raise InputError(
            f"init_kwargs= must be a dict of constructor argument names to values, not {given!r}",
            hint='pass e.g. init_kwargs={"n_in": 4, "n_out": 2}',
        )
    return dict(given)


def build_module(
    recipe: ModuleRecipe, state: dict[str, Any], policy: Any, options: dict[str, Any]
) -> Any:
    """Build the module on the ``meta`` device (no random init), assign the loaded tensors
    (no copy), and re-tie shared weights. The class or factory is imported only if the user
    passed it (``model_class=``/``factory=``) or ``policy`` allows its name."""
    import torch

    builder = _builder(recipe, policy, options)
    given = options.get("init_kwargs")
    if given is not None:  # the user's constructor arguments win over the recorded ones
        recipe = recipe._replace(init_kwargs=_user_kwargs(given))
    retie_state(state, recipe.tied)
    try:
        with torch.device("meta"):
            module = builder(**recipe.init_kwargs)
    except Exception as exc:
        user_built = options.get("model_class") is not None or callable(options.get("factory"))
        raise ArtifactError(
            f"cannot construct {_name_of(builder)}(**{recipe.init_kwargs!r}): "
            f"{type(exc).__name__}: {exc}",
            hint="pass init_kwargs={...} with the arguments its constructor needs, or "
            "factory=<a function that builds it>"
            if user_built
            else "the class's constructor changed since the model was saved; install the "
            "version listed in the manifest (`persistkit show`), or pass model_class=",
        ) from None
    if not _is_module(module):
        raise ArtifactError(
            f"{_name_of(builder)}(...) returned a {type(module).__name__}, not a torch.nn.Module"
        )
    _load_weights(module, state, builder, assign=True)
    if _has_meta_tensors(module):
        # a buffer the state dict does not hold (non-persistent) was left unmaterialised:
        # fall back to a normal construction, whose __init__ computes it
        module = builder(**recipe.init_kwargs)
        _load_weights(module, state, builder, assign=False)
    _retie(module, recipe.tied)
    return module


def _builder(recipe: ModuleRecipe, policy: Any, options: dict[str, Any]) -> Any:
    user_class = options.get("model_class")
    if user_class is not None:
        if not (isinstance(user_class, type) and _is_module_class(user_class)):
            raise InputError(
                f"model_class= must be a torch.nn.Module subclass, not {user_class!r}",
                hint="pass the class itself, e.g. model_class="
                + (recipe.qualname.split(".")[-1] or type(user_class).__name__),
            )
        return user_class
    user_factory = options.get("factory")
    if callable(user_factory):
        return user_factory
    path = recipe.factory or recipe.class_path
    if not policy.allows(path):
        what = "factory" if recipe.factory else "class"
        instead = "factory=<the function>" if recipe.factory else "model_class=<the class>"
        raise UntrustedArtifactError(
            f"refusing to load {policy.source}: rebuilding the model would import the {what} "
            f"{path}, which nobody has trusted (the artifact is not sealed by your key)",
            hint=f'if you trust that code, pass trusted=["{path}"], or import it yourself '
            f"and pass {instead}",
            globals_needed=[path],
        )
    obj = import_object(path)
    if recipe.factory:
        if not callable(obj):
            raise ArtifactError(f"the recorded factory {path} is not callable")
        return obj
    if not (isinstance(obj, type) and _is_module_class(obj)):
        raise UntrustedArtifactError(
            f"refusing to load {policy.source}: its recorded model class {path} is not a "
            "torch.nn.Module subclass",
            hint="the artifact was tampered with, or names the wrong class; pass model_class=",
            globals_needed=[path],
        )
    return obj


def import_object(path: str) -> Any:
    """Import ``module.Qualname`` (the longest importable module prefix, then attributes)."""
    parts = path.split(".")
    errors: list[str] = []
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or module_name
            if not (module_name == missing or module_name.startswith(missing + ".")):
                errors.append(f"{module_name}: {exc}")  # the module exists but its import broke
                break
            continue
        except Exception as exc:
            errors.append(f"importing {module_name} failed: {type(exc).__name__}: {exc}")
            break
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            errors.append(f"module {module_name} has no attribute {'.'.join(parts[split:])}")
            break
        return obj
    detail = f" ({errors[0]})" if errors else ""
    raise ArtifactError(
        f"cannot import {path}, which this model needs to be rebuilt{detail}",
        remedies=(ImportCode(path.split(".")[0], model_class=True),),
    )


def _load_weights(module: Any, state: dict[str, Any], builder: Any, *, assign: bool) -> None:
    try:
        module.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:4])
        raise ArtifactError(
            f"the stored weights do not fit a {_name_of(builder)} built with the recorded "
            f"arguments: {detail}",
            hint="the class or its constructor arguments changed since saving; install the "
            "version in the manifest, or pass model_class= / init_kwargs= that match",
        ) from None


def _has_meta_tensors(module: Any) -> bool:
    return any(t.is_meta for t in module.parameters()) or any(t.is_meta for t in module.buffers())


def _retie(module: Any, tied: tuple[tuple[str, ...], ...]) -> None:
    for group in tied:
        shared = _get(module, group[0])
        for alias in group[1:]:
            owner_path, _, leaf = alias.rpartition(".")
            setattr(module.get_submodule(owner_path), leaf, shared)


def _get(module: Any, path: str) -> Any:
    owner_path, _, leaf = path.rpartition(".")
    return getattr(module.get_submodule(owner_path), leaf)


def _is_module(obj: Any) -> bool:
    import torch

    return isinstance(obj, torch.nn.Module)


def _is_module_class(cls: type) -> bool:
    import torch

    return issubclass(cls, torch.nn.Module)


def _name_of(builder: Any) -> str:
    return importable_name(builder) or getattr(builder, "__qualname__", repr(builder))
