"""One SQL statement sent to PostgreSQL now and answered later, on Django's own connection.

A worker that must have a row committed before it does something on the network (the
outbox marks a message "maybe delivered" before SMTP's final dot) would otherwise wait a
database round trip per item. Sent through libpq's asynchronous API, the statement runs
while the worker does its other round trips, and ``rows()`` waits only for what is left.

The statement is inlined client-side (psycopg's ClientCursor.mogrify) and sent with the
simple query protocol: in autocommit (as in a worker) it is its own transaction, committed
when answered; inside a transaction it is part of it.
Nothing else may use the connection until ``rows()`` has been called: call it in a
``finally`` if the work in between can fail.
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from django.db import connection
from psycopg import pq


class PendingStatementError(psycopg.Error):
    """PostgreSQL refused the statement (its own message)."""


class PendingStatement:
    def __init__(self, sql: str, params: list[Any]) -> None:
        connection.ensure_connection()
        raw = connection.connection
        query = psycopg.ClientCursor(raw).mogrify(sql, params)
        self._pgconn = raw.pgconn
        self._pgconn.send_query(query.encode(raw.info.encoding))
        while self._pgconn.flush():  # 1 while some of the query is still unsent
            select.select([], [self._pgconn.socket], [])
        self._rows: list[tuple[str | None, ...]] | None = None

    def rows(self) -> list[tuple[str | None, ...]]:
        """Wait for the answer; every value as text (None for NULL)."""
        if self._rows is not None:
            return self._rows
        pgconn = self._pgconn
        pgconn.consume_input()
        while pgconn.is_busy():
            select.select([pgconn.socket], [], [])
            pgconn.consume_input()
        rows: list[tuple[str | None, ...]] = []
        error = None
        while (result := pgconn.get_result()) is not None:
            if result.status == pq.ExecStatus.TUPLES_OK:
                for row in range(result.ntuples):
                    rows.append(
                        tuple(
                            None
                            if (value := result.get_value(row, col)) is None
                            else value.decode()
                            for col in range(result.nfields)
                        )
                    )
            elif result.status != pq.ExecStatus.COMMAND_OK:
                error = (result.error_message or b"").decode(errors="replace")
        self._rows = rows
        if error is not None:
            raise PendingStatementError(error.strip())
        return rows
