"""PostgreSQL for Chorus: Django's backend, with a connection pool whose health check is paid
only where it can find something.

Django's ``CONN_HEALTH_CHECKS`` with a pool pings the server on every checkout: one more round
trip each time a request (or each thread hop of one) takes a connection, a share of the
gateway's CPU and latency that ``bench/gateway_overhead.py`` measures. A connection that went
back to the pool moments ago is as good as it was then; one that sat idle longer may have been
closed by the server (a restart, ``idle_session_timeout``, a proxy in between), so only that
one is pinged. One the client already knows to be closed or broken is refused without a round
trip. A refused connection is replaced by a new one, as with Django's check.

``ENGINE = "studio_site.postgresql"`` (``settings.database_from_url``); every other behaviour
is Django's PostgreSQL backend.
"""

from time import monotonic

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base

# A connection idle in the pool for longer than this is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 2.0


def connection_returned(conn) -> None:
    """The pool's ``reset`` hook (and a new connection's): note when it was last known good."""
    conn._chorus_returned_at = monotonic()


def connection_checked(conn) -> None:
    """The pool's ``check`` hook: raise when ``conn`` must not be handed out."""
    if conn.closed or conn.broken:
        raise ConnectionError("the pooled connection is closed")
    returned_at = getattr(conn, "_chorus_returned_at", None)
    if returned_at is None or monotonic() - returned_at > PING_AFTER_IDLE_SECONDS:
        from psycopg_pool import ConnectionPool

        ConnectionPool.check_connection(conn)


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not options:
            return None
        if self.alias not in self._connection_pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("A connection pool cannot keep persistent connections.")
            from psycopg_pool import ConnectionPool

            params = self.get_connection_params()
            params["autocommit"] = True  # Django sets the connection's own mode after checkout
            checks = self.settings_dict.get("CONN_HEALTH_CHECKS")
            pool = ConnectionPool(
                kwargs=params,
                open=False,  # opened on first use, not at start-up
                configure=self._pooled_connection_configure,
                check=connection_checked if checks else None,
                reset=connection_returned,
                **({} if options is True else options),
            )
            # Two threads may build one at once: the first stored wins, as in Django.
            self._connection_pools.setdefault(self.alias, pool)
        return self._connection_pools[self.alias]

    def _pooled_connection_configure(self, conn) -> None:
        """A new pooled connection: Django's set-up, and it is known good from now."""
        self._configure_connection(conn)
        connection_returned(conn)
