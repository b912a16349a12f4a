"""Discovery and registration of plugins: one plugin manager, built once, lazily.

Plugins come from the ``persistkit`` entry-point group (our own first-party plugins too).
``PERSISTKIT_PLUGINS`` (comma-separated entry-point names) limits which load;
``PERSISTKIT_DISABLE_PLUGINS`` skips some. A plugin that fails to import is reported with a
warning and skipped, never fatal.

A plugin may also declare, in two more entry-point groups, what it answers for; each entry
point's value is the plugin's own value in the ``persistkit`` group:

* ``persistkit.backends``: the name is a backend the plugin provides. Its ``persistkit_load``
  answers only for the backends it declares.
* ``persistkit.models``: the name is a module or package (``sklearn``, ``torch.nn``). Its
  ``persistkit_freeze`` and ``persistkit_predict`` answer only for objects of a class defined
  in it (or in a module under it), or derived from such a class.

A plugin with declarations is imported when a load names one of its backends, when a model
from one of its modules is frozen or predicted, and otherwise on the first call of any
other hook or any look at every backend: so a load imports only the plugins it needs (the
14 first-party ones cost ~9 ms to import and register). A plugin with no declarations is
imported when the manager is built, as before. Whatever is imported is registered in
entry-point order, so the hooks answer in the same order as when all plugins are imported.
``PERSISTKIT_LAZY_PLUGINS=0`` imports every plugin up front.
"""

from __future__ import annotations

import os
import threading
import types
import warnings
from dataclasses import replace
from typing import Any

import pluggy

from persistkit import hookspecs
from persistkit.errors import BackendNotFoundError, BackendUnavailableError, PluginError
from persistkit.records import BackendInfo
from persistkit.values import Value

ENTRY_POINT_GROUP = "persistkit"
#: entry-point groups in which a plugin declares what it answers for (see the module docstring)
BACKENDS_GROUP = "persistkit.backends"
MODELS_GROUP = "persistkit.models"
hookimpl = pluggy.HookimplMarker("persistkit")


class PluginEntry(Value):
    """One plugin of the ``persistkit`` entry-point group, with what it declares."""

    _fields = ("name", "value", "backends", "models")
    __slots__ = _fields
    name: str
    value: str
    backends: tuple[str, ...]
    models: tuple[str, ...]

    def __init__(
        self, name: str, value: str, backends: tuple[str, ...] = (), models: tuple[str, ...] = ()
    ) -> None:
        self._set(name, value, backends, models)

    @property
    def lazy(self) -> bool:
        """Imported only when needed: it said what it answers for."""
        return bool(self.backends or self.models)


class Plugins:
    """The plugin manager and the backend registry the plugins declared, filled as plugins
    are imported (all of them on first use of :attr:`hook`, :attr:`pm` or :attr:`backends`;
    only the needed ones through :meth:`hook_for_backend` and :meth:`hook_for_model`)."""

    def __init__(
        self,
        pm: pluggy.PluginManager,
        entries: list[PluginEntry] | None = None,
        extras: list[tuple[str, object]] | None = None,
    ) -> None:
        self._pm = pm
        self._entries = _distinct(entries or [])
        self._extras = extras or []
        self._objects: dict[str, object] = {}  # entry name -> imported plugin object
        self._registered: list[str] = []  # entry names registered, in registration order
        self._position = {e.name: i for i, e in enumerate(self._entries)}
        self._kinds: dict[str, frozenset[tuple[str, int]]] = {}  # see _kinds_of
        self._tried: set[str] = set()  # entry names imported (or failed to)
        self._backends: dict[str, BackendInfo] = {}
        self.broken: dict[str, str] = {}
        self._complete = not any(e.lazy for e in self._entries)
        self._error: Exception | None = None
        self._routed_types: set[type] = set()  # model classes whose plugins are registered
        self._guard = threading.RLock()

    # -- the complete view --------------------------------------------------------------------
    @property
    def pm(self) -> pluggy.PluginManager:
        """The pluggy manager, with every plugin registered."""
        self.load_all()
        return self._pm

    @property
    def hook(self) -> Any:
        """Every plugin's hooks (imports the plugins not imported yet)."""
        self.load_all()
        return self._pm.hook

    @property
    def backends(self) -> dict[str, BackendInfo]:
        """Every backend every plugin declares, by name."""
        self.load_all()
        return self._backends

    def load_all(self) -> None:
        """Import and register every plugin not registered yet."""
        if not self._complete:
            with self._guard:
                self._ensure([e.name for e in self._entries])
                self._complete = True

    # -- only what a call needs ---------------------------------------------------------------
    def hook_for_backend(self, backend: str) -> Any:
        """The hooks, for a call about ``backend`` only (``persistkit_load``): the plugins
        that declare it and those that declare nothing are registered; every plugin is when
        none declares it."""
        self._ensure_backend(backend)
        return self._pm.hook

    def hook_for_model(self, model: Any) -> Any:
        """The hooks, for ``persistkit_freeze`` or ``persistkit_predict`` on ``model``: the
        plugins declaring a module that ``model``'s class, or a base class, is defined in (or
        under), and those that declare nothing, are registered."""
        kind = type(model)
        if not self._complete and kind not in self._routed_types:
            modules = [
                cls.__module__
                for cls in kind.__mro__
                if cls is not object and isinstance(cls.__module__, str)
            ]
            wanted = [
                e.name
                for e in self._entries
                if any(_within(module, prefix) for module in modules for prefix in e.models)
            ]
            if wanted:
                with self._guard:
                    self._ensure(wanted)
            self._routed_types.add(kind)  # a server predicts one kind many times
        return self._pm.hook

    def backend(self, name: str) -> BackendInfo:
        """The backend called ``name``; raises a helpful error if unknown or not installed."""
        self._ensure_backend(name)
        info = self._backends.get(name)
        if info is None:
            self.load_all()
            info = self._backends.get(name)
        if info is None:
            known = ", ".join(sorted(self._backends)) or "none"
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

    def _ensure_backend(self, backend: str) -> None:
        if self._complete:
            return
        wanted = [e.name for e in self._entries if backend in e.backends]
        with self._guard:
            if wanted:
                self._ensure(wanted)
            else:  # a backend nobody declares may come from any plugin
                self.load_all()

    # -- registration -------------------------------------------------------------------------
    def register_initial(self) -> None:
        """Register the plugins that declare nothing, then the extra ones."""
        with self._guard:
            self._ensure([e.name for e in self._entries if not e.lazy], always=True)
            extras = {name for name, _ in self._extras}
            for entry in self._entries:
                for name in set(entry.backends).intersection(self._backends):
                    if self._backends[name].plugin in extras:
                        # the extra may be this very plugin (then it stands for the entry):
                        # importing the entry tells, and raises if it is another one
                        self._ensure([entry.name])
                        continue
                    raise _declared_twice(name, self._backends[name].plugin, entry.name)

    def _ensure(self, names: list[str], *, always: bool = False) -> None:
        """Import the entries ``names`` not imported yet and register them, keeping the
        registration order entry-point order followed by the extra plugins: pluggy calls
        later registrations first, so the hooks answer in the same order as when every
        plugin is imported up front."""
        if self._error is not None:
            # as every start of eager plugins raised it: said on every call, never once only
            raise self._error
        new = [n for n in names if n not in self._tried]
        if not new and not always:
            return
        from persistkit import discovery  # not at import: `import persistkit` stays cheap

        for entry in self._entries:
            if entry.name in new:
                self._tried.add(entry.name)
                try:
                    self._objects[entry.name] = discovery.load_entry_point(entry.value)
                except Exception as exc:  # a broken plugin must not break persistkit
                    self._broken(entry, exc)
        order = [e for e in self._entries if e.name in self._objects]
        missing = [e for e in order if e.name not in self._registered]
        pm = self._pm
        extras_in = any(pm.get_plugin(name) is not None for name, _ in self._extras)
        if extras_in or any(self._answers_before_registered(e, pm) for e in missing):
            # plugins that must answer after the new ones are registered again behind them,
            # in a new manager swapped in whole: a hook called meanwhile (another thread)
            # sees the old set or the new one, never one with a plugin missing
            pm, missing, registered = _new_manager(), order, []
        else:  # the new ones answer after (or beside) every plugin registered: added as they are
            registered = list(self._registered)
        for entry in missing:
            plugin = self._objects[entry.name]
            if any(plugin is extra for _, extra in self._extras):
                del self._objects[entry.name]  # also passed as an extra plugin: that one counts
                continue
            try:
                pm.register(plugin, name=entry.name)
            except Exception as exc:
                del self._objects[entry.name]
                self._broken(entry, exc)
                continue
            if entry.name in new:
                try:
                    self._collect(entry, pm)
                except Exception as exc:  # its persistkit_backends() failed, or a clash
                    pm.unregister(name=entry.name)
                    del self._objects[entry.name]
                    self._error = exc
                    raise
            registered.append(entry.name)
        for name, plugin in self._extras:
            pm.register(plugin, name=name)
            self._collect_named(name, pm)
        self._pm, self._registered = pm, registered

    def _answers_before_registered(self, entry: PluginEntry, pm: pluggy.PluginManager) -> bool:
        """Whether registering ``entry`` now would put one of its hook implementations in the
        wrong place: pluggy orders the implementations of one hook of the same kind (plain,
        ``tryfirst``, ``trylast``; wrapper or not) by registration, so ``entry`` may only
        come after the registered plugins that implement its hooks in its kinds if it comes
        after them in entry-point order too."""
        position = self._position
        later = [name for name in self._registered if position[name] > position[entry.name]]
        if not later:
            return False
        mine = self._kinds_of(entry.name, pm)
        return any(_share_a_kind(mine, self._kinds_of(name, pm)) for name in later)

    def _kinds_of(self, name: str, pm: pluggy.PluginManager) -> frozenset[tuple[str, int]]:
        """``(hook name, kind)`` of each hook implementation of the entry ``name`` (see
        :func:`_impl_kind`), found as pluggy finds them; remembered."""
        kinds = self._kinds.get(name)
        if kinds is None:
            plugin = self._objects[name]
            found = set()
            for attr in dir(plugin):
                opts = pm.parse_hookimpl_opts(plugin, attr)
                if opts is not None:
                    found.add((opts.get("specname") or attr, _impl_kind(opts)))
            kinds = self._kinds[name] = frozenset(found)
        return kinds

    def _collect(self, entry: PluginEntry, pm: pluggy.PluginManager) -> None:
        provided = self._collect_named(entry.name, pm)
        missing = [b for b in entry.backends if b not in provided]
        if missing:
            warnings.warn(
                f"persistkit plugin {entry.name!r} declares the backend(s) "
                f"{', '.join(missing)} in the {BACKENDS_GROUP!r} entry points, but its "
                "persistkit_backends() does not return them: fix the plugin's entry points",
                RuntimeWarning,
                stacklevel=4,
            )

    def _collect_named(self, plugin_name: str, pm: pluggy.PluginManager) -> list[str]:
        """Add the backends the plugin registered as ``plugin_name`` in ``pm`` declares."""
        found = _collect_backends(pm, only=plugin_name, known=self._backends)
        self._backends.update(found)
        return list(found)

    def _broken(self, entry: PluginEntry, exc: Exception) -> None:
        self.broken[entry.name] = f"{type(exc).__name__}: {exc}"
        warnings.warn(
            f"persistkit plugin {entry.name!r} ({entry.value}) failed to load and was "
            f"skipped: {exc}",
            RuntimeWarning,
            stacklevel=5,
        )


_lock = threading.Lock()
_plugins: Plugins | None = None


def get_plugins() -> Plugins:
    """Return the process-wide plugins, reading the entry points on first use."""
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


#: the kind of an implementation marked both ``tryfirst`` and ``trylast``: pluggy files it
#: with the ``trylast`` ones, yet other insertions look at its ``tryfirst`` flag; it is taken
#: to share its hook with every other implementation (a rebuild keeps the order right)
_ANY_KIND = -1


def _impl_kind(opts: Any) -> int:
    """What pluggy orders a hook implementation by before registration: wrapper or not,
    then ``tryfirst`` / ``trylast`` / neither (one number per combination)."""
    first, last = bool(opts.get("tryfirst")), bool(opts.get("trylast"))
    if first and last:
        return _ANY_KIND
    wrapper = bool(opts.get("wrapper") or opts.get("hookwrapper"))
    return 4 * wrapper + 2 * first + last


def _share_a_kind(mine: frozenset[tuple[str, int]], theirs: frozenset[tuple[str, int]]) -> bool:
    """Whether two plugins implement one hook in the same kind (see :func:`_impl_kind`)."""
    if mine & theirs:
        return True
    loose = {hook for hook, kind in mine | theirs if kind == _ANY_KIND}
    return bool(loose) and bool({hook for hook, _ in mine} & {hook for hook, _ in theirs} & loose)


def _plainly_not_a_hookimpl(plugin: object, name: str, marker: str) -> bool:
    """True when ``name`` on ``plugin`` is, read straight from the dicts, a class, a module,
    plain data (an object that is no descriptor, like a str or a ``BackendInfo``) or a plain
    function without ``marker``: pluggy's own static lookup (``inspect.getattr_static``, ~10 us
    a name) would find that same object and skip it, since only functions, bound methods,
    staticmethods and classmethods can carry hook implementations. Anything else (instance
    attributes, slots, descriptors, wrapped methods, class plugins) is left to pluggy, so no
    plugin registers differently."""
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
    if static is _ABSENT:
        return False
    if isinstance(static, (type, types.ModuleType)):
        return True
    if not hasattr(type(static), "__get__") and not isinstance(static, types.MethodType):
        return True  # plain data (a str, a BackendInfo): never a hook
    return type(static) is types.FunctionType and marker not in static.__dict__


def build_plugins(
    *extra: object, load_entry_points: bool = True, lazy: bool | None = None
) -> Plugins:
    """Build a plugin manager: specs, entry points (filtered by env vars), then ``extra``.

    With ``lazy`` (default: unless ``PERSISTKIT_LAZY_PLUGINS=0``), plugins that declare what
    they answer for are imported only when needed (see the module docstring)."""
    pm = _new_manager()
    if lazy is None:
        lazy = os.environ.get("PERSISTKIT_LAZY_PLUGINS", "1").strip() not in ("0", "false", "no")
    entries = _selected_entries(declared=lazy) if load_entry_points else []
    extras: list[tuple[str, object]] = []
    for plugin in extra:
        name = _unique_name(pm, plugin)
        while any(name == n for n, _ in extras) or any(name == e.name for e in entries):
            name += "#extra"
        extras.append((name, plugin))
    plugins = Plugins(pm, entries, extras)
    plugins.register_initial()
    return plugins


def _new_manager() -> _PluginManager:
    """A plugin manager that knows persistkit's hooks and has no plugin yet."""
    pm = _PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    return pm


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


def _selected_entries(*, declared: bool = True) -> list[PluginEntry]:
    """The plugins to load, in entry-point order, with their declarations (read, like the
    entry points themselves, from the record kept between processes: see
    :mod:`persistkit.discovery`). A backend declared by two plugins is an error naming both."""
    from persistkit import discovery

    only = _names_from_env("PERSISTKIT_PLUGINS")
    skip = _names_from_env("PERSISTKIT_DISABLE_PLUGINS") or set()
    groups = [ENTRY_POINT_GROUP, BACKENDS_GROUP, MODELS_GROUP] if declared else [ENTRY_POINT_GROUP]
    found = discovery.entry_points_of(groups)
    entries = _distinct(
        [
            PluginEntry(name, value)
            for name, value in found[ENTRY_POINT_GROUP]
            if (only is None or name in only) and name not in skip
        ]
    )
    if not declared or not entries:
        return entries
    backends, models = found[BACKENDS_GROUP], found[MODELS_GROUP]
    seen: dict[str, str] = {}
    declared_entries = []
    for entry in entries:
        mine = tuple(b for b, value in backends if value == entry.value)
        for b in mine:
            if b in seen:
                raise _declared_twice(b, seen[b], entry.name)
            seen[b] = entry.name
        prefixes = tuple(m for m, value in models if value == entry.value)
        declared_entries.append(entry.replace(backends=mine, models=prefixes))
    return declared_entries


def _distinct(entries: list[PluginEntry]) -> list[PluginEntry]:
    """``entries`` without a second entry point of the same name or the same value (two
    distributions claiming one name; one plugin published under two names): the first is
    used, and each one left out is a warning."""
    names: dict[str, PluginEntry] = {}
    values: dict[str, PluginEntry] = {}
    kept = []
    for entry in entries:
        first = names.get(entry.name) or values.get(entry.value)
        if first is not None:
            warnings.warn(
                f"persistkit plugin {entry.name!r} ({entry.value}) was skipped: "
                f"{first.name!r} ({first.value}) already uses that name or that plugin",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        names[entry.name] = values[entry.value] = entry
        kept.append(entry)
    return kept


def _declared_twice(backend: str, first: str | None, second: str) -> PluginError:
    return PluginError(
        f"backend {backend!r} is declared by two plugins: {first!r} and {second!r}",
        hint="uninstall one of them, or disable one with PERSISTKIT_DISABLE_PLUGINS=<name>",
    )


def _within(module: str, prefix: str) -> bool:
    """``module`` is ``prefix`` or a module under it (``torch.nn.modules`` is in ``torch.nn``)."""
    return module == prefix or module.startswith(prefix + ".")


def _names_from_env(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _collect_backends(
    pm: pluggy.PluginManager,
    *,
    only: str | None = None,
    known: dict[str, BackendInfo] | None = None,
) -> dict[str, BackendInfo]:
    """The backends the registered plugins (or only the one named ``only``) declare; a name
    declared twice, here or in ``known``, is an error naming both plugins."""
    known = known or {}
    backends: dict[str, BackendInfo] = {}
    for impl in pm.hook.persistkit_backends.get_hookimpls():
        plugin_name = impl.plugin_name
        if only is not None and plugin_name != only:
            continue
        declared: list[Any] = impl.function() or []  # type: ignore[assignment]
        for info in declared:
            if not isinstance(info, BackendInfo):
                raise PluginError(
                    f"plugin {plugin_name!r} declared {info!r}, which is not a BackendInfo",
                    hint="return persistkit.BackendInfo records from persistkit_backends()",
                )
            other_info = backends.get(info.name) or known.get(info.name)
            if other_info is not None and other_info.plugin != plugin_name:
                raise _declared_twice(info.name, other_info.plugin, plugin_name)
            backends[info.name] = replace(info, plugin=plugin_name)
    return backends
