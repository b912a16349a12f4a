"""The catalogs that keep payloads in one blobs location, registered there.

Two database catalogs may be given one ``blobs`` (``$PERSISTKIT_BLOBS`` set for every store,
or the same ``?blobs=``): a payload is then shared by digest, and a payload one catalog does
not know may be another's. Each catalog writes ``<blobs>/.persistkit/catalogs/<id>`` (its
id from the ``persistkit_store`` table; the file holds its URL without a password) when it is
first used, so that one that removes payloads knows whom else to ask first.
"""

from __future__ import annotations

import contextlib

from persistkit.catalog.space import FileSpace

REGISTRY = ".persistkit/catalogs"


def register(space: FileSpace, catalog_id: str, url: str) -> None:
    """Record the catalog ``catalog_id`` (opened at ``url``) as a user of ``space``.

    A location this process may not write is left as it is: a catalog that cannot write
    there stores no payload there either."""
    rel = f"{REGISTRY}/{catalog_id}"
    with contextlib.suppress(OSError, PermissionError):
        if space.read(rel) != url.encode():
            space.replace(rel, url.encode())


def others(space: FileSpace, catalog_id: str) -> dict[str, str]:
    """The other catalogs registered in ``space``: id -> the URL each was opened at."""
    found = {}
    for entry in space.listdir(REGISTRY):
        if entry != catalog_id and len(entry) == 32 and not entry.startswith("."):
            data = space.read(f"{REGISTRY}/{entry}")
            if data is not None:
                found[entry] = data.decode("utf-8", "replace")
    return found
