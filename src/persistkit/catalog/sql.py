"""The catalog in a database (SQLite or PostgreSQL, through SQLAlchemy Core); payloads in a
:class:`~persistkit.catalog.space.FileSpace` (a folder or an ``s3://`` prefix), each under
``<blobs>/<hex>/`` where ``<hex>`` is the version's digest, so copies share one payload.

URLs: ``sqlite:///relative/catalog.db``, ``sqlite:////absolute/catalog.db`` (payloads beside
it in ``catalog.blobs/`` unless told otherwise), ``postgresql://user:pw@host:5432/db``
(``postgresql+psycopg://`` is the same; payloads must be named). Where the payloads go:
``blobs=``, else a ``blobs=`` query parameter in the URL itself
(``postgresql://host/db?blobs=s3://bucket/models``, handy on a command line), else (for
PostgreSQL only) ``$PERSISTKIT_BLOBS``. Catalogs given one blobs location register there
(:mod:`persistkit.catalog.shared`): ``rm`` then leaves a payload to ``gc``, which removes
only what none of them uses.

Saving: the payload is stored first; then one transaction claims the number: the highest
number of the name (deleted ones too) plus one, inserted with ``UNIQUE(name, version)``
(the primary key). SQLite serialises writers (``BEGIN IMMEDIATE``); on PostgreSQL a writer
that loses the race gets a unique violation and claims the next number. A writer killed
before the commit leaves no row, only an unreferenced payload that ``persistkit gc`` removes.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from persistkit import cache
from persistkit.artifact import fsync_directory, fsync_tree, write_manifest
from persistkit.catalog import migrations, shared
from persistkit.catalog.base import Catalog, Damaged, Listed, Orphan, Summary, manifest_digest
from persistkit.catalog.files import merge_tags_over
from persistkit.catalog.space import FileSpace, hide_password
from persistkit.errors import IntegrityError, ManifestError, StoreError, VersionNotFoundError
from persistkit.manifest import Manifest, utc_now
from persistkit.records import Artifact

try:
    import sqlalchemy as sa
    from sqlalchemy import event, exc
    from sqlalchemy.engine import URL, Connection, Engine, make_url
except ImportError as _missing:  # pragma: no cover - the db extra is not installed
    raise StoreError(
        f"a database-backed store needs SQLAlchemy ({_missing.name} is not installed)",
        hint='pip install "persistkit[db]" (and "persistkit[postgres]" for PostgreSQL)',
    ) from None

from persistkit.catalog import schema as t

MAX_CLAIMS = 1000
_URL_FORMS = (
    "use sqlite:///relative/catalog.db, sqlite:////absolute/catalog.db or "
    "postgresql://user:password@host:5432/database"
)
_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()
_HEX = frozenset("0123456789abcdef")


class SqlCatalog(Catalog):
    """A store's catalog in SQLite or PostgreSQL (see the module docs)."""

    def __init__(
        self,
        engine: Engine,
        url: str,
        space: FileSpace,
        sqlite_file: Path | None,
        *,
        plain_url: str | None = None,
        storage_options: dict[str, Any] | None = None,
        reopen_url: str | None = None,
    ):
        self.engine = engine
        self.url = url
        self.space = space
        self.kind = "sqlite" if engine.dialect.name == "sqlite" else engine.dialect.name
        self.catalog_id: str | None = None  # read with the schema (4 and later)
        self._sqlite_file = sqlite_file
        self._schema_ok = False
        # the URL without password or blobs: what the registry of shared blobs records
        self._plain_url = plain_url or url
        self._storage_options = storage_options
        #: the URL that opens this very catalog and blobs in another process (its password
        #: too: never show it)
        self.reopen_url = reopen_url or url

    @classmethod
    def open(
        cls, raw: str, *, blobs: str | None = None, storage_options: dict[str, Any] | None = None
    ) -> SqlCatalog:
        """The catalog at ``raw`` (see the module docs for URLs and ``blobs``): payloads go to
        ``blobs``, else a ``?blobs=`` in the URL, else (PostgreSQL only) ``$PERSISTKIT_BLOBS``,
        else (SQLite only) a folder beside the database file."""
        try:
            url = make_url(raw)
        except (exc.ArgumentError, ValueError) as error:  # ValueError: a port not a number
            raise StoreError(
                f"cannot read the database URL {hide_password(raw)}: {error}",
                hint=_URL_FORMS,
            ) from None
        query = dict(url.query)
        in_url = query.pop("blobs", None)
        url = url.set(query=query)
        blobs = blobs or (in_url if isinstance(in_url, str) else None)
        sqlite_file = None
        if url.get_backend_name() == "sqlite":
            if url.host:  # sqlite://models.db: a host, no file
                raise StoreError(
                    f"{_shown(url)} names no file ({url.host!r} is read as a host name)",
                    hint=f"a file is sqlite:///{url.host} (three slashes: a relative path) "
                    f"or sqlite:////absolute/{url.host} (four slashes)",
                )
            if not url.database or url.database == ":memory:":
                raise StoreError(
                    "an in-memory SQLite catalog would vanish with each connection",
                    hint="give a file: sqlite:///path/catalog.db",
                )
            sqlite_file = Path(url.database).expanduser().absolute()
            url = url.set(database=str(sqlite_file))
            if blobs is None:
                blobs = str(sqlite_file.with_name(sqlite_file.stem + ".blobs"))
        else:
            if url.drivername in ("postgresql", "postgres"):  # psycopg 3 unless one is named
                url = url.set(drivername="postgresql+psycopg")
            blobs = blobs or os.environ.get("PERSISTKIT_BLOBS") or None
        if blobs is None:
            raise StoreError(
                f"the store {_shown(url)} needs a place for its payloads",
                hint="pass blobs=URL (a folder or s3://bucket/prefix), set PERSISTKIT_BLOBS, "
                "or add ?blobs=URL to the store URL",
            )
        space = FileSpace(blobs, storage_options)
        shown = _shown(url)
        if isinstance(in_url, str):  # shown as given: the URL pasted back opens this store
            shown += f"{'&' if url.query else '?'}blobs={in_url}"
        plain = url.set(password=None).render_as_string(hide_password=False)
        return cls(
            _engine(url),
            shown,
            space,
            sqlite_file,
            plain_url=plain,
            storage_options=storage_options,
            reopen_url=url.update_query_dict({"blobs": space.url}).render_as_string(
                hide_password=False
            ),
        )

    def close(self) -> None:
        with _ENGINES_LOCK:
            for key, engine in list(_ENGINES.items()):
                if engine is self.engine:
                    del _ENGINES[key]
        self.engine.dispose()

    # -- transactions --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _connect(self, *, write: bool = False) -> Iterator[Connection | None]:
        """One transaction (None when there is no catalog yet and this is a read)."""
        if not self._ready(write):
            yield None
            return
        with self._errors(), self.engine.connect() as conn:
            if write:
                conn.execution_options(persistkit_write=True)
            with conn.begin():
                yield conn

    def _ready(self, write: bool) -> bool:
        """Whether the schema is there and current: created on the first write, upgraded
        (and a newer one refused) on the first use in this process."""
        if self._schema_ok:
            return True
        if self._sqlite_file is not None and not self._sqlite_file.exists():
            if not write:
                return False
            self._sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        with self._errors(), self.engine.connect() as conn:
            with conn.begin():
                found = migrations.current_version(conn)
            migrations.check_not_newer(found, self.url)
            if found is None and not write:
                return False
            if found != migrations.SCHEMA_VERSION:
                conn.execution_options(persistkit_write=True)
                with self._upgrade_errors(found), conn.begin():
                    migrations.upgrade(conn, self.url)
            with contextlib.suppress(exc.DBAPIError), conn.begin():  # a reader not granted it
                self.catalog_id = conn.execute(sa.select(t.store_id.c.id)).scalar()
        if self.catalog_id is not None:
            shared.register(self.space, self.catalog_id, self._plain_url)
        self._schema_ok = True
        return True

    @contextlib.contextmanager
    def _upgrade_errors(self, found: int | None) -> Iterator[None]:
        """Say plainly that an older catalog must be upgraded by a role that may."""
        try:
            yield
        except exc.DBAPIError as error:
            if found is None:
                raise  # creating the catalog: the usual message
            reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
            raise StoreError(
                f"the catalog at {self.url} has schema version {found}; this persistkit "
                f"reads version {migrations.SCHEMA_VERSION} and could not upgrade it "
                f"({reason})",
                hint="the catalog must be upgraded once by a role that owns its tables: "
                "run `persistkit ls --store URL` as that role (any command that opens the "
                "store upgrades it), then grant readers SELECT on the tables again",
            ) from error

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except exc.IntegrityError:
            raise  # a lost claim: the caller tries the next number
        except exc.DBAPIError as error:
            reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
            raise StoreError(
                f"the catalog database {self.url} failed: {reason}",
                hint="check that the database is reachable and the URL (user, password, "
                "host, database name)",
            ) from error

    # -- listing -------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self._ready(False)

    def names(self) -> builtins.list[str]:
        with self._connect() as conn:
            if conn is None:
                return []
            q = sa.select(t.versions.c.name).where(~t.versions.c.deleted).distinct()
            return sorted(conn.execute(q).scalars())

    def every_name(self) -> builtins.list[str]:
        with self._connect() as conn:
            if conn is None:
                return []
            return sorted(conn.execute(sa.select(t.versions.c.name).distinct()).scalars())

    def numbers(self, name: str) -> builtins.list[int]:
        return self._numbers(name, deleted=False)

    def tombstones(self, name: str) -> builtins.list[int]:
        return self._numbers(name, deleted=True)

    def _numbers(self, name: str, *, deleted: bool) -> builtins.list[int]:
        v = t.versions.c
        with self._connect() as conn:
            if conn is None:
                return []
            q = sa.select(v.version).where(v.name == name, v.deleted == deleted)
            return sorted(conn.execute(q.order_by(v.version)).scalars())

    def records(
        self, name: str, numbers: builtins.list[int], *, merge_tags: bool = True
    ) -> builtins.list[Manifest | Damaged]:
        v, g = t.versions.c, t.tags.c
        wanted = set(numbers)
        with self._connect() as conn:
            rows: dict[int, str | None] = {}
            added: dict[int, dict[str, str]] = {}
            if conn is not None:
                q = sa.select(v.version, v.manifest).where(v.name == name, ~v.deleted)
                g_q = sa.select(g.version, g.key, g.value).where(g.name == name, g.added)
                if len(wanted) <= 50:  # else the whole name, filtered here
                    q = q.where(v.version.in_(wanted))
                    g_q = g_q.where(g.version.in_(wanted))
                rows = {n: m for n, m in conn.execute(q) if n in wanted}
                if merge_tags:
                    for n, key, value in conn.execute(g_q):
                        added.setdefault(n, {})[key] = value
        found: builtins.list[Manifest | Damaged] = []
        for n in numbers:
            if n not in rows:
                raise VersionNotFoundError(f"{name}:{n} was deleted")
            parsed = self._parse(name, n, rows[n])
            if isinstance(parsed, Manifest):
                parsed = merge_tags_over(parsed, added.get(n, {})).replace(name=name, version=n)
            found.append(parsed)
        return found

    def listing(
        self, name: str
    ) -> builtins.list[tuple[int, Manifest | Listed | Damaged, str | None]]:
        """One query for the rows, one for the added tags; digests from their column.

        A row whose ``checked`` column matches its manifest and summary is listed from the
        summary (its manifest parsed only if a caller asks for it); any other row (written
        before schema 3, or edited since) is parsed, and listed as damaged if it must be."""
        v, g = t.versions.c, t.tags.c
        with self._connect() as conn:
            if conn is None:
                return []
            columns = (v.version, v.manifest, v.digest, v.summary, v.checked)
            q = sa.select(*columns).where(v.name == name, ~v.deleted)
            rows = conn.execute(q.order_by(v.version)).all()
            added: dict[int, dict[str, str]] = {}
            g_q = sa.select(g.version, g.key, g.value).where(g.name == name, g.added)
            for n, key, value in conn.execute(g_q):
                added.setdefault(n, {})[key] = value
        found: builtins.list[tuple[int, Manifest | Listed | Damaged, str | None]] = []
        for n, text, digest, summary, checked in rows:
            tags = added.get(n, {})
            listed = _listed(text, summary, checked, tags)
            if listed is not None:
                parse = functools.partial(self._merged, name, n, text, tags)
                found.append((n, Listed(listed, parse), digest))
                continue
            parsed = self._parse(name, n, text)
            if isinstance(parsed, Damaged):
                found.append((n, parsed, None))
            else:
                found.append((n, merge_tags_over(parsed, tags), digest))
        return found

    def _merged(self, name: str, version: int, text: str, added: dict[str, str]) -> Manifest:
        """A listed row's whole manifest, tags merged (it was checked: it parses)."""
        parsed = self._parse(name, version, text)
        if isinstance(parsed, Damaged):  # only if a newer persistkit refuses what it accepted
            raise parsed.error()
        return merge_tags_over(parsed, added)

    def digests(self, name: str, numbers: builtins.list[int]) -> dict[int, str]:
        """From the digest column: no manifest is parsed."""
        v = t.versions.c
        wanted = set(numbers)
        with self._connect() as conn:
            if conn is None:
                return {}
            q = sa.select(v.version, v.digest).where(v.name == name, ~v.deleted)
            return {n: str(d) for n, d in conn.execute(q) if n in wanted and d}

    def _parse(self, name: str, version: int, text: str | None) -> Manifest | Damaged:
        try:
            return _parsed(text or "")
        except ManifestError as error:
            return Damaged(name, version, error.message, self.location(name, version))

    def location(self, name: str, version: int) -> str:
        return f"{self.url}#{name}:{version}"

    # -- aliases and tags ------------------------------------------------------------------------
    def aliases(self, name: str) -> dict[str, int]:
        a = t.aliases.c
        with self._connect() as conn:
            if conn is None:
                return {}
            q = sa.select(a.alias, a.version).where(a.name == name).order_by(a.alias)
            return {alias: int(version) for alias, version in conn.execute(q)}

    def alias_version(self, name: str, alias: str) -> object:
        a = t.aliases.c
        with self._connect() as conn:
            if conn is None:
                return None
            q = sa.select(a.version).where(a.name == name, a.alias == alias)
            return conn.execute(q).scalar()

    def set_alias(self, name: str, alias: str, version: int, *, durable: bool = False) -> None:
        a = t.aliases.c
        with self._connect(write=True) as conn:
            assert conn is not None
            row = {"name": name, "alias": alias, "version": version, "updated_at": utc_now()}
            upsert = _dialect_insert(conn)(t.aliases).values(**row)
            moved = {"version": version, "updated_at": row["updated_at"]}
            conn.execute(upsert.on_conflict_do_update(index_elements=[a.name, a.alias], set_=moved))

    def remove_alias(self, name: str, alias: str) -> None:
        a = t.aliases.c
        with self._connect(write=True) as conn:
            assert conn is not None
            conn.execute(sa.delete(t.aliases).where(a.name == name, a.alias == alias))

    def added_tags(self, name: str, version: int) -> dict[str, str]:
        g = t.tags.c
        with self._connect() as conn:
            if conn is None:
                return {}
            q = sa.select(g.key, g.value).where(g.name == name, g.version == version, g.added)
            return {key: value for key, value in conn.execute(q)}

    def set_added_tags(
        self, name: str, version: int, tags: dict[str, str], *, durable: bool = False
    ) -> None:
        g, v = t.tags.c, t.versions.c
        with self._connect(write=True) as conn:
            assert conn is not None
            # writers of one version's tags take turns (SQLite: one writer at a time anyway)
            one = sa.select(v.version).where(v.name == name, v.version == version)
            conn.execute(one.with_for_update())
            conn.execute(sa.delete(t.tags).where(g.name == name, g.version == version, g.added))
            if tags:
                conn.execute(
                    sa.insert(t.tags),
                    [
                        {"name": name, "version": version, "key": k, "value": v, "added": True}
                        for k, v in tags.items()
                    ],
                )

    # -- publishing and fetching ---------------------------------------------------------------
    def publish(
        self,
        staging: Path,
        name: str,
        manifest: Manifest,
        *,
        durable: bool = False,
        version: int | None = None,
    ) -> Artifact:
        self._ready(True)  # registered beside the payloads before storing one there
        written = Manifest.from_json(manifest.to_json())  # as readers will parse it
        digest = manifest_digest(written)
        summary = Summary.of(written).to_json()  # name and version are not in it
        hexdigest = digest[7:]
        stored = self._store_payload(staging, name, manifest, hexdigest, durable)
        for _ in range(MAX_CLAIMS):
            try:
                claimed = self._claim(name, manifest, digest, summary, version)
                break
            except exc.IntegrityError:
                if version is not None:
                    raise StoreError(
                        f"{name}:{version} already exists in {self.url} (or was deleted there)",
                        hint="move into an empty store to keep version numbers",
                    ) from None
        else:
            raise StoreError(f"could not claim a version of {name} after {MAX_CLAIMS} tries")
        if stored is None:  # remote payload: the staged folder becomes the cache entry
            write_manifest(staging, claimed)
            path = cache.adopt(staging, digest)
            shutil.rmtree(staging, ignore_errors=True)
        else:
            write_manifest(stored, claimed, durable=durable)
            path = stored
        number = claimed.version
        return Artifact(
            uri=f"{name}:{number}", path=path, manifest=claimed, name=name, version=number
        )

    def _store_payload(
        self, staging: Path, name: str, manifest: Manifest, hexdigest: str, durable: bool
    ) -> Path | None:
        """Put the payload under ``<blobs>/<hex>/``: a local one is the staged folder
        renamed (its local path returned); a remote one is uploaded (None returned)."""
        if not self.space.is_local:
            self.space.upload(staging, hexdigest, manifest, name)
            return None
        final = self.space.local_root / hexdigest
        if durable:
            fsync_tree(staging)
        # gc judges a payload's age by its folder's mtime: a save in flight must look new
        # however long ago its files were written (an uploaded one is new by itself)
        os.utime(staging)
        try:
            os.rename(staging, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(staging, ignore_errors=True)  # the same payload is there already
            with contextlib.suppress(OSError):
                os.utime(final)  # an unreferenced one, perhaps: about to be used again
        if durable:
            fsync_directory(final.parent)
        return final

    def _claim(
        self, name: str, manifest: Manifest, digest: str, summary: str, exact: int | None
    ) -> Manifest:
        """Insert the version's row (its number: ``exact``, else the next); the commit that
        ends this transaction is the publication."""
        v = t.versions.c
        with self._connect(write=True) as conn:
            assert conn is not None
            if exact is None:
                highest = conn.execute(sa.select(sa.func.max(v.version)).where(v.name == name))
                number = int(highest.scalar() or 0) + 1
            else:
                number = exact
            claimed = manifest.replace(name=name, version=number)
            conn.execute(sa.insert(t.versions).values(row_values(claimed, digest, summary)))
            if claimed.tags:
                conn.execute(
                    sa.insert(t.tags),
                    [
                        {"name": name, "version": number, "key": k, "value": str(val)}
                        | {"added": False}
                        for k, val in claimed.tags.items()
                    ],
                )
        return claimed

    def fetch(self, name: str, version: int) -> tuple[Path, Manifest]:
        v = t.versions.c
        with self._connect() as conn:
            row = None
            if conn is not None:
                q = sa.select(v.manifest, v.digest, v.deleted)
                row = conn.execute(q.where(v.name == name, v.version == version)).first()
        if row is None or row.deleted:
            raise VersionNotFoundError(f"{name}:{version} was deleted")
        parsed = self._parse(name, version, row.manifest)
        if isinstance(parsed, Damaged):
            raise parsed.error()
        hexdigest = str(row.digest)[7:]
        if self.space.is_local:
            path = self.space.local_root / hexdigest
            if not path.is_dir():
                raise _missing_payload(name, version, str(path))
            return path, parsed
        try:
            path = self.space.download(hexdigest, parsed, row.manifest.encode(), row.digest)
        except FileNotFoundError:
            raise _missing_payload(name, version, self.space.location(hexdigest)) from None
        return path, parsed

    # -- deleting and cleaning up --------------------------------------------------------------
    def delete(self, name: str, version: int) -> None:
        v, g = t.versions.c, t.tags.c
        with self._connect(write=True) as conn:
            assert conn is not None
            one = (v.name == name) & (v.version == version)
            digest = conn.execute(sa.select(v.digest).where(one)).scalar()
            conn.execute(
                sa.update(t.versions).where(one).values(deleted=True, deleted_at=utc_now())
            )
            conn.execute(sa.delete(t.tags).where(g.name == name, g.version == version))
            shared = conn.execute(
                sa.select(sa.func.count()).where(v.digest == digest, ~v.deleted)
            ).scalar()
        if digest and not shared and not self._sharers():
            self.space.remove(str(digest)[7:])  # (shared blobs: gc asks the others first)

    def tombstone(self, name: str, version: int) -> None:
        with self._connect(write=True) as conn:
            assert conn is not None
            conn.execute(
                sa.insert(t.versions).values(
                    name=name, version=version, deleted=True, deleted_at=utc_now()
                )
            )

    def _sharers(self) -> dict[str, str]:
        """The other catalogs registered in this one's blobs location (id -> URL)."""
        if not self._ready(False):
            return {}
        # an id this role may not read: every registered catalog counts as another
        return shared.others(self.space, self.catalog_id or "")

    def used(self) -> set[str]:
        """The hex digests of the payloads this catalog's versions point at."""
        v = t.versions.c
        with self._connect() as conn:
            if conn is None:
                return set()
            q = sa.select(v.digest).where(~v.deleted, v.digest.is_not(None)).distinct()
            return {str(d)[7:] for d in conn.execute(q).scalars()}

    def _used_by_sharers(self) -> set[str]:
        """The payloads the other catalogs registered in the blobs location point at;
        a :class:`StoreError` if one of them cannot be asked."""
        used: set[str] = set()
        for catalog_id, url in self._sharers().items():
            try:
                other = SqlCatalog.open(
                    url, blobs=self.space.url, storage_options=self._storage_options
                )
                if not other._ready(False) or other.catalog_id != catalog_id:
                    raise StoreError(f"{url} is not the catalog {catalog_id}")
                used |= other.used()
            except StoreError as error:
                raise StoreError(
                    f"the payloads in {self.space.url} are shared with the catalog {url}, "
                    f"which cannot be asked what it uses ({error.message}): nothing removed",
                    hint="give each store its own blobs; if that store is gone for good, "
                    f"remove {self.space.location(shared.REGISTRY + '/' + catalog_id)}",
                ) from None
        return used

    def orphans(self, older_than: float) -> builtins.list[Orphan]:
        used = self.used()
        if self._ready(False):
            used |= self._used_by_sharers()
        now = time.time()
        found = []
        for entry in self.space.listdir(""):
            if len(entry) != 64 or not set(entry) <= _HEX or entry in used:
                continue
            changed = self.space.modified(entry)
            age = now - (changed if changed is not None else now)
            if age >= older_than:
                found.append(Orphan(self.space.location(entry), entry, age))
        return found


def _missing_payload(name: str, version: int, where: str) -> IntegrityError:
    """The error for a version whose row is there and whose payload is not."""
    return IntegrityError(
        f"the payload of {name}:{version} is missing from {where}",
        hint=f"restore it from a backup, or remove the version: persistkit rm {name}:{version}",
    )


def _dialect_insert(conn: Connection) -> Any:
    """The ``insert`` of the connection's dialect, which has ``on_conflict_do_update``."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def row_values(manifest: Manifest, digest: str, summary: str) -> dict[str, Any]:
    """The versions-table row of a claimed ``manifest`` (name and version set), its
    ``digest`` and ``summary`` (:meth:`Summary.to_json` of it as parsed back)."""
    text = manifest.to_json()
    return {
        "name": manifest.name,
        "version": manifest.version,
        "created_at": manifest.created_at,
        "backend": manifest.backend,
        "digest": digest,
        "size": manifest.total_size,
        "deleted": False,
        "manifest": text,
        "summary": summary,
        "checked": _checked(text, summary),
    }


def listing_columns(text: str, manifest: Manifest) -> dict[str, str]:
    """``summary`` and ``checked`` for a row holding ``text``, parsed as ``manifest``."""
    summary = Summary.of(manifest).to_json()
    return {"summary": summary, "checked": _checked(text, summary)}


def _checked(text: str, summary: str) -> str:
    """The sha256 hex a row's ``checked`` holds: over its manifest and summary, as written."""
    raw = text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(b"%d:" % len(raw) + raw + summary.encode()).hexdigest()


def _listed(
    text: str | None, summary: str | None, checked: str | None, added: dict[str, str]
) -> Summary | None:
    """The row's summary (added tags merged), or None when the row must be parsed: no
    summary (written before schema 3) or one that does not match ``checked``."""
    if text is None or summary is None or checked is None:
        return None
    if _checked(text, summary) != checked:
        return None  # edited since it was written: the manifest decides
    try:
        return Summary.from_json(summary).with_tags(added)
    except ValueError:
        return None


@functools.lru_cache(maxsize=16384)  # ~6.5 KB each with its text: ~100 MB at most
def _parsed(text: str) -> Manifest:
    """A row's manifest, parsed once per process: a row's text never changes (added tags
    live in their own table), and parsing is most of the time of a long listing. Keyed by
    the whole text, so two stores never share an entry unless their rows are identical.
    Callers treat manifests as values (``Manifest.replace``), never mutate them."""
    return Manifest.from_json(text.encode())


# --- engines --------------------------------------------------------------------------------


def _shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _engine(url: URL) -> Engine:
    """One engine per database and process (connections are pooled)."""
    key = url.render_as_string(hide_password=False)
    with _ENGINES_LOCK:
        if key in _ENGINES:
            return _ENGINES[key]
        try:
            if url.get_backend_name() == "sqlite":
                engine = sa.create_engine(url, connect_args={"timeout": 60})
                _sqlite_transactions(engine)
            else:
                # a server that accepts and never answers is an error, not a wait forever
                timeout = {} if "connect_timeout" in url.query else {"connect_timeout": 10}
                engine = sa.create_engine(url, pool_pre_ping=True, connect_args=timeout)
        except ImportError as error:
            raise StoreError(
                f"the store {_shown(url)} needs the database driver {error.name}",
                hint='pip install "persistkit[postgres]"',
            ) from None
        except exc.ArgumentError as error:  # NoSuchModuleError: a driver SQLAlchemy lacks
            raise StoreError(
                f"cannot open the store {_shown(url)}: {error}", hint=_URL_FORMS
            ) from None
        _ENGINES[key] = engine
        return engine


def _forget_connections_after_fork() -> None:
    """In a forked child: leave the parent's pooled connections to the parent (closing
    them here would close the parent's sockets); the child opens its own."""
    global _ENGINES_LOCK
    _ENGINES_LOCK = threading.Lock()  # another thread of the parent may have held it
    for engine in _ENGINES.values():
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):  # not on Windows, which never forks
    os.register_at_fork(after_in_child=_forget_connections_after_fork)


def _sqlite_transactions(engine: Engine) -> None:
    """Let SQLAlchemy, not the sqlite3 module, begin transactions; a write begins with
    ``BEGIN IMMEDIATE`` (the write lock first: no deadlock between two readers upgrading);
    WAL lets readers go on while one process writes."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("persistkit_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
