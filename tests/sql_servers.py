"""Source databases for the SQL tests: a fresh database on this machine's PostgreSQL and MariaDB servers
(skipped, with the reason, when a server is not reachable), and SQLite files."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from adapters.sql._engine import with_default_driver
from hub.runtime.secrets import mask_url

PG_SERVER = os.environ.get("HUB_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
MARIA_SERVER = os.environ.get("HUB_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")


@contextmanager
def scratch_database(kind: str) -> Iterator[str]:
    """A new, empty database on the *kind* server ('postgresql' or 'mariadb'), dropped afterwards; yields
    its URL (without a driver name, as a user would write it in a spec)."""
    name = f"hub_src_{secrets.token_hex(4)}"
    server = PG_SERVER if kind == "postgresql" else MARIA_SERVER
    admin_db = "/postgres" if kind == "postgresql" else "/"
    admin = sa.create_engine(server + admin_db, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                             connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    except sa.exc.OperationalError as exc:
        pytest.skip(f"{kind} server not reachable at {mask_url(server)} ({str(exc.orig).splitlines()[0]}); "
                    f"set HUB_TEST_{'POSTGRES' if kind == 'postgresql' else 'MARIADB'} to use another")
    plain = server.replace("+psycopg", "").replace("mysql+pymysql", "mysql")
    try:
        yield f"{plain}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE {name}" + (" WITH (FORCE)" if kind == "postgresql" else "")))
        admin.dispose()


def writer(url: str) -> sa.Engine:
    """An engine that may write (the tests' own, to set up and change the source data)."""
    return sa.create_engine(with_default_driver(make_url(url)), poolclass=NullPool)
