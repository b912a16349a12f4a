"""The tables of a database catalog (SQLAlchemy Core), as the newest migration leaves them.

Indexes are made by :mod:`persistkit.catalog.migrations` (never declared here). The first
migration step creates these tables as declared here; a later step adding a column adds it only
where it is missing, so a new store and an upgraded one end the same.

``persistkit_versions`` holds one row per claimed number: the manifest as written (its bytes
verify the seal), the columns queries filter on, and (since schema 3) ``summary``: what a
listing shows (:class:`~persistkit.catalog.base.Summary`, compact JSON), with ``checked``: the
sha256 of the manifest and summary as the writer validated them, so a reader lists a version
from its summary without parsing the manifest, and a row edited since falls back to a full
parse. A deleted version keeps its row with ``deleted`` set (a tombstone: numbers are never
reused). ``persistkit_tags`` holds every tag of a version, ``added`` telling a tag set after
the save from one in the manifest. ``persistkit_store`` (schema 4) holds the catalog's id.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Integer, MetaData, String, Table, Text

NAME = String(128)  # refs.MAX_NAME_LENGTH
STAMP = String(40)  # an ISO 8601 UTC time, as the manifest writes it

metadata = MetaData()

schema_version = Table(
    "persistkit_schema",
    metadata,
    Column("version", Integer, nullable=False),
)

versions = Table(
    "persistkit_versions",
    metadata,
    Column("name", NAME, primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("created_at", STAMP),
    Column("backend", String(128)),
    Column("digest", String(71)),
    Column("size", BigInteger),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("deleted_at", STAMP),
    Column("manifest", Text),
    Column("summary", Text),  # schema 3
    Column("checked", String(64)),  # schema 3
)

#: the columns schema 3 added to ``persistkit_versions`` (release 1 made it without them)
SUMMARY_COLUMNS = ("summary", "checked")

aliases = Table(
    "persistkit_aliases",
    metadata,
    Column("name", NAME, primary_key=True),
    Column("alias", NAME, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", STAMP, nullable=False),
)

tags = Table(
    "persistkit_tags",
    metadata,
    Column("name", NAME, primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("key", NAME, primary_key=True),
    Column("added", Boolean, primary_key=True),
    Column("value", Text, nullable=False),
)

TABLES = [versions, aliases, tags]

#: schema 4: one row, the catalog's id (a uuid4 hex), which names it in the registry of the
#: catalogs sharing a blobs location (:mod:`persistkit.catalog.shared`)
store_id = Table(
    "persistkit_store",
    metadata,
    Column("id", String(32), nullable=False),
)
