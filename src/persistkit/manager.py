"""Discovery and registration of plugins: one plugin manager, built once, lazily.

Plugins come from the ``persistkit`` entry-point group (our own first-party plugins too).
``PERSISTKIT_PLUGINS`` (comma-separated entry-point names) limits which load;
``PERSISTKIT_DISABLE_PLUGINS`` skips some. A plugin that fails to import is reported with a
warning and skipped, never fatal.
"""

from __future__ import annotations

import os
import threading
import types
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import pluggy

from persistkit import hookspecs
from persistkit.errors import BackendNotFoundError, BackendUnavailableError, PluginError
from persistkit.records import BackendInfo

ENTRY_POINT_GROUP = "persistkit"
hookimpl = pluggy.HookimplMarker("persistkit")


@dataclass
class Plugins:
    """The loaded plugin manager plus the backend registry it declared."""

    pm: pluggy.PluginManager
    backends: dict[str, BackendInfo] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def backend(self, name: str) -> BackendInfo:
        """The backend called ``name``; raises a helpful error if unknown or not installed."""
        info = self.backends.get(name)
        if info is None:
            known = ", ".join(sorted(self.backends)) or "none"
            raise BackendNotFoundError(
                f"unknown backend {name!r}; installed backends: {known}",
                hint="pick one of those, or install the plugin that provides it "
                "(`persistkit backends` lists them all)",
            )
        if not info.available:
            raise BackendUnavailableError(
                f"backend {name!r} needs {', '.join(info.requires)}, which is not installed",
                hint=info.install_hint,
            )
        return info


_lock = threading.Lock()
_plugins: Plugins | None = None


def get_plugins() -> Plugins:
    """Return the process-wide plugins, loading entry points on first use."""
    global _plugins
    with _lock:
        if _plugins is None:
            from persistkit.collector import collection_paused

            with collection_paused():  # importing plugins could trigger a full collection
                _plugins = build_plugins()
        return _plugins


def reset_plugins(plugins: Plugins | None = None) -> None:
    """Forget the loaded plugins (tests use this to install a fresh manager)."""
    global _plugins
    with _lock:
        _plugins = plugins


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, looking for hook implementations among fewer names."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        # pluggy inspects every name dir() lists, statically (~10 us each); the ~30 dunder
        # names every object has are never hook implementations, and skipping them halves
        # the time registering the first-party plugins takes
        if name.startswith("__") and name.endswith("__"):
            return None
        if _plainly_not_a_hookimpl(plugin, name, self.project_name + "_impl"):
            return None
        return super().parse_hookimpl_opts(plugin, name)


_ABSENT = object()


def _plainly_not_a_hookimpl(plugin: object, name: str, marker: str) -> bool:
    """True when ``name`` on ``plugin`` is, read straight from the dicts, a class, a module or a
    plain function without ``marker``: pluggy's own static lookup (``inspect.getattr_static``,
    ~10 us a name) would find that same object and skip it, since only functions, bound
    methods, staticmethods and classmethods can carry hook implementations. Anything else
    (instance attributes, slots, descriptors, wrapped methods, class plugins) is left to
    pluggy, so no plugin registers differently."""
    if isinstance(plugin, type):
        return False
    if isinstance(plugin, types.ModuleType):
        static = plugin.__dict__.get(name, _ABSENT)
    else:
        try:
            own = object.__getattribute__(plugin, "__dict__")
        except AttributeError:
            return False
        if not isinstance(own, dict) or name in own:
            return False
        owners = (k.__dict__ for k in type(plugin).__mro__)
        static = next((found[name] for found in owners if name in found), _ABSENT)
    if isinstance(static, (type, types.ModuleType)):
        return True
    return type(static) is types.FunctionType and marker not in static.__dict__


def build_plugins(*extra: object, load_entry_points: bool = True) -> Plugins:
    """Build a plugin manager: specs, entry points (filtered by env vars), then ``extra``."""
    pm = _PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    broken: dict[str, str] = {}
    if load_entry_points:
        from persistkit import discovery  # not at import: `import persistkit` stays cheap

        for name, value in _selected_entry_points():
            if pm.get_plugin(name) is not None:
                continue
            try:
                plugin = discovery.load_entry_point(value)
                pm.register(plugin, name=name)
            except Exception as exc:  # a broken third-party plugin must not break persistkit
                broken[name] = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"persistkit plugin {name!r} ({value}) failed to load and was skipped: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
    for plugin in extra:
        pm.register(plugin, name=_unique_name(pm, plugin))
    return Plugins(pm=pm, backends=_collect_backends(pm), broken=broken)


def _unique_name(pm: pluggy.PluginManager, plugin: object) -> str:
    """A readable plugin name (module or class path) for error messages, made unique."""
    if isinstance(plugin, type(os)):
        base = plugin.__name__
    else:
        cls = type(plugin)
        base = f"{cls.__module__}.{cls.__qualname__}"
    name, n = base, 1
    while pm.get_plugin(name) is not None:
        n += 1
        name = f"{base}#{n}"
    return name


def _selected_entry_points() -> list[tuple[str, str]]:
    """``(name, value)`` of the entry points to load (remembered between processes while
    nothing is installed or removed, see :mod:`persistkit.discovery`)."""
    from persistkit import discovery

    only = _names_from_env("PERSISTKIT_PLUGINS")
    skip = _names_from_env("PERSISTKIT_DISABLE_PLUGINS") or set()
    return [
        (name, value)
        for name, value in discovery.entry_points(ENTRY_POINT_GROUP)
        if (only is None or name in only) and name not in skip
    ]


def _names_from_env(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _collect_backends(pm: pluggy.PluginManager) -> dict[str, BackendInfo]:
    backends: dict[str, BackendInfo] = {}
    for impl in pm.hook.persistkit_backends.get_hookimpls():
        plugin_name = impl.plugin_name
        declared: list[Any] = impl.function() or []  # type: ignore[assignment]
        for info in declared:
            if not isinstance(info, BackendInfo):
                raise PluginError(
                    f"plugin {plugin_name!r} declared {info!r}, which is not a BackendInfo",
                    hint="return persistkit.BackendInfo records from persistkit_backends()",
                )
            if info.name in backends:
                other = backends[info.name].plugin
                raise PluginError(
                    f"backend {info.name!r} is declared by two plugins: {other!r} and "
                    f"{plugin_name!r}",
                    hint="uninstall one of them, or disable one with "
                    "PERSISTKIT_DISABLE_PLUGINS=<name>",
                )
            backends[info.name] = replace(info, plugin=plugin_name)
    return backends
