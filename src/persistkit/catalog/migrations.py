"""Versions of the database catalog's schema, and the steps from each to the next.

A small versioned table (``persistkit_schema``, one row) rather than Alembic: the schema is a
handful of tables, every step must run on SQLite and PostgreSQL alike, and a store must
upgrade itself when a newer persistkit opens it, with no extra dependency or migration
folder to ship. Each step runs inside the opener's write transaction (with PostgreSQL's
advisory lock, SQLite's ``BEGIN IMMEDIATE``), so two processes opening an old store at once
upgrade it once. A store whose schema is newer than this release knows is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, insert, inspect, select, update

from persistkit.catalog import schema
from persistkit.errors import StoreError

Step = Callable[[Any], None]


def _create_tables(conn: Any) -> None:
    schema.metadata.create_all(conn, tables=[schema.schema_version, *schema.TABLES])


def _query_indexes(conn: Any) -> None:
    for statement in (
        'CREATE INDEX IF NOT EXISTS persistkit_tags_by_key ON persistkit_tags ("key", "value")',
        "CREATE INDEX IF NOT EXISTS persistkit_versions_by_digest ON persistkit_versions (digest)",
        "CREATE INDEX IF NOT EXISTS persistkit_versions_by_time "
        "ON persistkit_versions (created_at)",
    ):
        conn.exec_driver_sql(statement)


def _summaries(conn: Any) -> None:
    """Add ``summary`` and ``checked`` to the versions table (tables made by step 1 of a
    later release have them already) and fill them for every readable row; a row whose
    manifest does not parse keeps none and is listed by parsing it, as damaged."""
    from persistkit.catalog.sql import listing_columns
    from persistkit.errors import ManifestError
    from persistkit.manifest import Manifest

    table = schema.versions
    present = {c["name"] for c in inspect(conn).get_columns(table.name)}
    for column in schema.SUMMARY_COLUMNS:
        if column not in present:
            kind = table.c[column].type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column} {kind}")
    v = table.c
    rows = conn.execute(
        select(v.name, v.version, v.manifest).where(~v.deleted, v.summary.is_(None))
    ).all()
    for name, version, text in rows:
        try:
            manifest = Manifest.from_json((text or "").encode())
        except ManifestError:
            continue
        conn.execute(
            update(table)
            .where(v.name == name, v.version == version)
            .values(listing_columns(text, manifest))
        )


def _store_id(conn: Any) -> None:
    """Give the catalog an id (a random uuid), which registers it beside its payloads."""
    import uuid

    schema.metadata.create_all(conn, tables=[schema.store_id])
    if conn.execute(select(func.count()).select_from(schema.store_id)).scalar() == 0:
        conn.execute(insert(schema.store_id).values(id=uuid.uuid4().hex))


#: (schema version, what it adds, the step from the version before)
STEPS: list[tuple[int, str, Step]] = [
    (1, "tables: versions, aliases, tags", _create_tables),
    (2, "indexes: tags by key and value, versions by digest and time", _query_indexes),
    (3, "versions: summary and checked, so a listing parses no manifest", _summaries),
    (4, "store: the catalog's id, registered where its payloads are", _store_id),
]
SCHEMA_VERSION = STEPS[-1][0]
_LOCK_KEY = 0x70657273  # PostgreSQL advisory lock taken while upgrading


def current_version(conn: Any) -> int | None:
    """The schema version recorded in the database, or None when it has no catalog."""
    if not inspect(conn).has_table(schema.schema_version.name):
        return None
    found = conn.execute(select(func.max(schema.schema_version.c.version))).scalar()
    return None if found is None else int(found)


def check_not_newer(found: int | None, url: str) -> None:
    """Refuse a catalog written by a newer persistkit, naming the upgrade."""
    if found is not None and found > SCHEMA_VERSION:
        from persistkit import __version__

        raise StoreError(
            f"the catalog at {url} has schema version {found}, newer than this persistkit "
            f"({__version__}) can read (up to {SCHEMA_VERSION})",
            hint='upgrade persistkit where you open it: pip install -U "persistkit[db]"',
        )


def upgrade(conn: Any, url: str, target: int = SCHEMA_VERSION) -> int:
    """Bring the catalog to ``target`` inside the caller's write transaction; returns the
    version it was at (0: none). Already there: nothing is done."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})")
    found = current_version(conn)
    check_not_newer(found, url)
    start = found or 0
    for number, _, step in STEPS:
        if start < number <= target:
            step(conn)
    if start == 0:
        conn.execute(insert(schema.schema_version).values(version=target))
    elif target > start:
        conn.execute(update(schema.schema_version).values(version=target))
    return start
