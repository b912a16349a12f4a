"""Moving a whole store to another kind (``persistkit migrate-store``): every model, every
version under its own number (deleted numbers stay deleted), tags and aliases, then checked.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from persistkit.errors import StoreError

if TYPE_CHECKING:
    from persistkit.store import Store


@dataclass(frozen=True)
class MovedVersion:
    """One number of one model: ``copied`` (with its digest) or a ``tombstone``."""

    name: str
    version: int
    status: str
    digest: str | None = None


@dataclass
class MoveReport:
    """What :func:`migrate_store` did (or, dry, would do)."""

    versions: list[MovedVersion] = field(default_factory=list)
    aliases: dict[str, dict[str, int]] = field(default_factory=dict)
    verified: bool = False

    def to_dict(self) -> dict[str, object]:
        copied = [v for v in self.versions if v.status == "copied"]
        return {
            "models": sorted({v.name for v in self.versions}),
            "versions": len(copied),
            "tombstones": len(self.versions) - len(copied),
            "aliases": sum(len(a) for a in self.aliases.values()),
            "verified": self.verified,
            "items": [vars(v) for v in self.versions],
        }


def migrate_store(
    source: Store,
    dest: Store,
    *,
    dry_run: bool = False,
    progress: Callable[[MovedVersion, int, int], None] | None = None,
) -> MoveReport:
    """Copy every model of ``source`` into ``dest`` keeping version numbers, deleted numbers,
    tags (saved and added) and aliases; then check that every digest, tag and alias in
    ``dest`` equals the source's. ``dest`` must hold none of the names (else numbers could
    not be kept: use ``persistkit cp`` to merge). ``progress(item, done, total)`` is called
    after each number. Raises :class:`StoreError` if the check finds a difference."""
    if not source.exists():
        raise source.missing()
    names = source.catalog.every_name()  # a name whose every version was deleted too
    taken = [n for n in names if dest.catalog.numbers(n) or dest.catalog.tombstones(n)]
    if taken:
        raise StoreError(
            f"{dest.url} already has {', '.join(taken[:5])}"
            + (f" and {len(taken) - 5} more" if len(taken) > 5 else "")
            + " (or had: deleted numbers are never reused)"
            + ": version numbers can be kept only in a store without those names",
            hint="migrate into an empty store, or merge one model at a time with "
            "`persistkit cp NAME DEST --aliases` (copies get new numbers)",
        )
    plan: list[MovedVersion] = []
    report = MoveReport()
    for name in names:
        dead = set(source.catalog.tombstones(name))
        for number in sorted(dead | set(source.catalog.numbers(name))):
            status = "tombstone" if number in dead else "copied"
            digest = None if number in dead else source.digest(f"{name}:{number}")
            plan.append(MovedVersion(name, number, status, digest))
        report.aliases[name] = source.aliases(name)
    report.versions = plan
    if dry_run:
        return report
    for done, item in enumerate(plan, 1):
        _move(source, dest, item)
        if progress is not None:
            progress(item, done, len(plan))
    for name, aliases in report.aliases.items():
        for alias, version in aliases.items():
            dest.catalog.set_alias(name, alias, version)
    _verify(source, dest, report)
    report.verified = True
    return report


def _move(source: Store, dest: Store, item: MovedVersion) -> None:
    if item.status == "tombstone":
        dest.catalog.tombstone(item.name, item.version)
        return
    folder, manifest = source.catalog.fetch(item.name, item.version)
    staging = dest.stage(item.name)
    try:
        for entry in manifest.files:
            (staging / entry.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / entry.path, staging / entry.path)
        dest.publish(staging, item.name, manifest, version=item.version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    added = source.catalog.added_tags(item.name, item.version)
    if added:
        dest.catalog.set_added_tags(item.name, item.version, added)


def _verify(source: Store, dest: Store, report: MoveReport) -> None:
    """Every digest, tag set, deleted number and alias in ``dest`` as in ``source``."""
    wrong = []
    for item in report.versions:
        ref = f"{item.name}:{item.version}"
        if item.status == "tombstone":
            if item.version not in dest.catalog.tombstones(item.name):
                wrong.append(f"{ref} is not deleted")
        elif dest.digest(ref) != item.digest:
            wrong.append(f"{ref} has the digest {dest.digest(ref)}, not {item.digest}")
        elif dest.tags(ref) != source.tags(ref):
            wrong.append(f"{ref} has the tags {dest.tags(ref)}, not {source.tags(ref)}")
    for name, aliases in report.aliases.items():
        if dest.aliases(name) != aliases:
            wrong.append(f"{name} has the aliases {dest.aliases(name)}, not {aliases}")
    if wrong:
        raise StoreError(
            f"the copy in {dest.url} differs from {source.url}: " + "; ".join(wrong[:5]),
            hint="nothing was removed from the source; remove the destination and try again",
        )
