"""The bookkeeping behind a :class:`persistkit.Store`, in files or in a database.

``open_catalog(url)`` picks the kind from the URL: ``sqlite:///...``, ``postgresql://...`` (and
``postgresql+psycopg://...``) open a :class:`~persistkit.catalog.sql.SqlCatalog` (SQLAlchemy
is imported only then); anything else (a folder, ``memory://``, ``s3://``) a
:class:`~persistkit.catalog.files.FileCatalog`.
"""

from __future__ import annotations

from typing import Any

from persistkit.catalog.base import Catalog, Damaged, Listed, Orphan, Summary, manifest_digest
from persistkit.catalog.space import FileSpace

__all__ = ["Catalog", "Damaged", "FileSpace", "Orphan", "is_database_url", "manifest_digest"]
__all__ += ["Listed", "Summary", "open_catalog"]

DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")


def is_database_url(url: str) -> bool:
    """Whether ``url`` names a database catalog (``sqlite:``, ``postgresql[+driver]:``)."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower() if ":" in url else ""
    return scheme in DATABASE_SCHEMES and "://" in url


def open_catalog(
    url: str, *, blobs: str | None = None, storage_options: dict[str, Any] | None = None
) -> Catalog:
    """The catalog a store URL names. ``blobs`` is where a database catalog keeps payloads
    (see :meth:`SqlCatalog.open <persistkit.catalog.sql.SqlCatalog.open>` for the defaults);
    a folder store keeps them under its own root."""
    if is_database_url(url):
        from persistkit.catalog.sql import SqlCatalog

        return SqlCatalog.open(url, blobs=blobs, storage_options=storage_options)
    from persistkit.catalog.files import FileCatalog

    return FileCatalog(FileSpace(url, storage_options))
