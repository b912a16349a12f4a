"""Small immutable records that cost nothing to define.

A load makes a handful of records (a file's identity, a parsed ref, a manifest's file entry,
the trust policy, ...). Under CPython 3.11, defining a frozen ``dataclass`` costs 0.4-1 ms at
import and a ``NamedTuple`` ~0.15 ms: both compile generated code. A first load imports a
dozen of them, so they are written as subclasses of :class:`Value` instead, which define
nothing at import but a class.

A subclass names its fields, in order, in ``_fields`` (and sets ``__slots__ = _fields``), and
its ``__init__`` sets them with :meth:`Value._set`. It then has value semantics: ``==`` and
``hash`` over the fields, a ``repr`` naming them, pickling, :meth:`replace`, unpacking into
its fields, and fields that cannot be set or deleted afterwards. Unlike a tuple, a record
equals only a record of its own class.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, TypeVar

_R = TypeVar("_R", bound="Record")


class Record:
    """Fields named in ``_fields``, compared by ``==``, shown by ``repr`` and copied by
    :meth:`replace`: what :class:`Value` and the (mutable) ``Manifest`` share."""

    __slots__ = ()
    #: the fields, in the order ``__init__`` takes them
    _fields: ClassVar[tuple[str, ...]] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self._fields])

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={v!r}" for n, v in zip(self._fields, self._values(), strict=True))
        return f"{type(self).__name__}({shown})"

    def replace(self: _R, **changes: Any) -> _R:
        """A copy with the fields in ``changes`` set to new values."""
        unknown = set(changes) - set(self._fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(sorted(unknown))}")
        values = dict(zip(self._fields, self._values(), strict=True))
        values.update(changes)
        return type(self)(**values)


class Value(Record):
    """Base of persistkit's small immutable records (see the module docs)."""

    __slots__ = ()

    def _set(self, *values: Any) -> None:
        """Set every field, in :attr:`_fields` order (only ``__init__`` calls this)."""
        for name, value in zip(self._fields, values, strict=True):
            object.__setattr__(self, name, value)

    def __hash__(self) -> int:
        return hash(self._values())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a {type(self).__name__} cannot be changed (tried to set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(
            f"a {type(self).__name__} cannot be changed (tried to delete {name!r})"
        )

    def __iter__(self) -> Iterator[Any]:
        """The fields' values in order, so a record unpacks as the ``NamedTuple`` some of
        these records were (``name, dtype, shape, begin, end = entry``)."""
        return iter(self._values())

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._values())
