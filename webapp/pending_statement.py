"""One SQL statement sent to PostgreSQL now and answered later, on Django's own connection.

A worker that must have a row committed before it does something on the network (the
outbox marks a message "maybe delivered" before SMTP's final dot) would otherwise wait a
database round trip per item. Sent through libpq's asynchronous API, the statement runs
while the worker does its other round trips, and ``rows()`` waits only for what is left.

The statement's parameters are ``$1``, ``$2``, ... (their types cast in its text) and go
separately, as text: ``None`` is NULL, a datetime its ISO form, anything else ``str()``.
With ``prepare_as`` the statement is prepared on the connection the first time it is
used there, under that name, so PostgreSQL neither parses nor plans it again. In autocommit (as in a
worker) it is its own transaction, committed when answered; inside a transaction it is
part of it.
Nothing else may use the connection until ``rows()`` has been called: call it in a
``finally`` if the work in between can fail.
"""

from __future__ import annotations

import select
import weakref
from datetime import datetime
from typing import Any

import psycopg
from django.db import connection
from psycopg import pq


class PendingStatementError(psycopg.Error):
    """PostgreSQL refused the statement (its own message)."""


# The statements prepared on each (psycopg) connection; a new connection prepares anew.
_prepared: weakref.WeakKeyDictionary[psycopg.Connection, set[str]] = weakref.WeakKeyDictionary()


def _text(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, datetime):
        return value.isoformat().encode()
    return str(value).encode()


def _error(result: pq.PGresult | None) -> PendingStatementError:
    message = (result.error_message if result is not None else b"") or b"no answer"
    return PendingStatementError(message.decode(errors="replace").strip())


class PendingStatement:
    def __init__(self, sql: str, params: list[Any], *, prepare_as: str | None = None) -> None:
        connection.ensure_connection()
        raw = connection.connection
        pgconn = self._pgconn = raw.pgconn
        values = [_text(value) for value in params]
        if prepare_as is None:
            pgconn.send_query_params(sql.encode(raw.info.encoding), values)
        else:
            names = _prepared.setdefault(raw, set())
            if prepare_as not in names:  # once per connection, and waited for (it is rare)
                result = pgconn.prepare(prepare_as.encode(), sql.encode(raw.info.encoding))
                if result.status != pq.ExecStatus.COMMAND_OK:
                    raise _error(result)
                names.add(prepare_as)
            pgconn.send_query_prepared(prepare_as.encode(), values)
        while pgconn.flush():  # 1 while some of the query is still unsent
            select.select([], [pgconn.socket], [])
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
                columns = range(result.nfields)
                for row in range(result.ntuples):
                    rows.append(
                        tuple(
                            None
                            if (value := result.get_value(row, col)) is None
                            else value.decode()
                            for col in columns
                        )
                    )
            elif result.status != pq.ExecStatus.COMMAND_OK:
                error = _error(result)
        self._rows = rows
        if error is not None:
            raise error
        return rows
