"""A real PostgreSQL for the tests of database-backed stores.

The server is started outside the tests (``bash scripts/postgres.sh start``; ``.ci/run`` does
it) and named by ``PERSISTKIT_TEST_POSTGRES_URL``. Each test gets a database of its own
(``fresh_postgres_url``). Without a reachable server the PostgreSQL cases skip with the
reason, except under CI (``CI`` set), where they fail: they must never skip silently there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

ENV = "PERSISTKIT_TEST_POSTGRES_URL"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required under CI: {reason}", pytrace=False)
    pytest.skip(
        f"no PostgreSQL: {reason} (start one: bash scripts/postgres.sh start, then "
        f"export {ENV}=$(bash scripts/postgres.sh url))"
    )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of the test server's maintenance database (skips or fails without one)."""
    url = os.environ.get(ENV)
    if not url:
        _unavailable(f"{ENV} is not set")
    assert url is not None
    import sqlalchemy as sa

    engine = sa.create_engine(_with_driver(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        _unavailable(f"cannot connect to {url}: {str(exc.orig).strip()[:200]}")
    finally:
        engine.dispose()
    yield url


@pytest.fixture
def fresh_postgres_url(postgres_server: str) -> Iterator[str]:
    """A new, empty database on the test server (dropped afterwards)."""
    import sqlalchemy as sa

    name = f"pk_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(_with_driver(postgres_server), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = postgres_server.rsplit("/", 1)[0] + f"/{name}"
    yield url
    from persistkit.catalog import sql

    for key, engine in list(sql._ENGINES.items()):  # this test's pooled connections
        if key.endswith(f"/{name}"):
            engine.dispose()
            del sql._ENGINES[key]
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


def _with_driver(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1]
