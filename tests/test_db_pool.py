"""The PostgreSQL pool pings a connection only when it sat idle (studio_site/postgresql)."""

import time

import pytest
from django.db import connection, connections
from psycopg_pool import ConnectionPool

from studio_site.postgresql import base as chorus_pg

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql" or not connection.settings_dict["OPTIONS"].get("pool"),
    reason="the pool is PostgreSQL's (DATABASE_URL=postgres://…)",
)


@pytest.fixture
def pings(monkeypatch):
    seen = []
    real = ConnectionPool.check_connection

    def counted(conn):
        seen.append(conn)
        real(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counted))
    return seen


def checkouts(times: int) -> None:
    pool = connection.pool
    for _ in range(times):
        with pool.connection() as conn:
            conn.execute("SELECT 1")


@pytest.mark.django_db
def test_a_connection_back_moments_ago_is_not_pinged(pings, monkeypatch):
    assert isinstance(connections["default"], chorus_pg.DatabaseWrapper)
    # Several connections left idle past the limit (as earlier tests leave them).
    monkeypatch.setattr(chorus_pg, "PING_AFTER_IDLE_SECONDS", 0.2)
    pool = connection.pool
    with pool.connection(), pool.connection(), pool.connection(), pool.connection():
        pass
    time.sleep(0.3)
    # Each connection the pool holds once (it hands them out in turn): those that sat idle
    # since earlier tests are pinged now, and all are fresh after.
    checkouts(connection.pool.get_stats()["pool_size"] + 1)
    pings.clear()
    checkouts(20)
    assert pings == []


@pytest.mark.django_db
def test_an_idle_connection_is_pinged(pings, monkeypatch):
    checkouts(1)
    pings.clear()
    monkeypatch.setattr(chorus_pg, "PING_AFTER_IDLE_SECONDS", -1.0)
    checkouts(3)
    assert len(pings) == 3


@pytest.mark.django_db
def test_a_closed_connection_is_never_handed_out():
    pool = connection.pool
    with pool.connection() as conn:
        first = conn
    first.close()  # as a server restart would leave it (closed under the pool)
    with pool.connection() as conn:
        assert not conn.closed
        assert conn.execute("SELECT 1").fetchone() == (1,)
