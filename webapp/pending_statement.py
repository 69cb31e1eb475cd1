"""One SQL statement sent to PostgreSQL now and answered later, on Django's own connection.

A worker that must have a row committed before it does something on the network (the
outbox marks a message "maybe delivered" before SMTP's final dot) would otherwise wait a
database round trip per item. Sent through libpq's asynchronous API, the statement runs
while the worker does its other round trips, and ``rows()`` waits only for what is left.

The statement's parameters are ``$1``, ``$2``, ... (their types cast in its text) and go
separately, as text: ``None`` is NULL, a datetime its ISO form, anything else ``str()``.
With ``prepare_as`` the statement is prepared on the connection the first time it is
used there, under that name: PostgreSQL parses it once, and plans it once it has seen that
a generic plan does as well as one made for the values (if something deallocates it —
DISCARD ALL, a pooler — it is prepared again). In autocommit (as in a worker) it is its
own transaction, committed when answered; inside a transaction it is part of it.
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
    if type(value) is str:  # the usual case first: this runs for every parameter
        return value.encode()
    if isinstance(value, bytes):
        return value
    if isinstance(value, datetime):
        return value.isoformat().encode()
    return str(value).encode()


def _error(result: pq.PGresult | None) -> PendingStatementError:
    message = (result.error_message if result is not None else b"") or b"no answer"
    return PendingStatementError(message.decode(errors="replace").strip())


_NO_SUCH_STATEMENT = b"26000"  # invalid_sql_statement_name


class PendingStatement:
    def __init__(self, sql: str, params: list[Any], *, prepare_as: str | None = None) -> None:
        connection.ensure_connection()
        self._raw = connection.connection
        self._pgconn = self._raw.pgconn
        self._sql = sql.encode(self._raw.info.encoding)
        self._name = None if prepare_as is None else prepare_as.encode()
        self._values = [_text(value) for value in params]
        self._rows: list[tuple[str | None, ...]] | None = None
        self._send()

    def _send(self) -> None:
        pgconn = self._pgconn
        if self._name is None:
            pgconn.send_query_params(self._sql, self._values)
        else:
            names = _prepared.setdefault(self._raw, set())
            if self._name not in names:  # once per connection, and waited for (it is rare)
                result = pgconn.prepare(self._name, self._sql)
                if result.status != pq.ExecStatus.COMMAND_OK:
                    raise _error(result)
                names.add(self._name)
            pgconn.send_query_prepared(self._name, self._values)
        while pgconn.flush():  # 1 while some of the query is still unsent
            select.select([], [pgconn.socket], [])

    def rows(self) -> list[tuple[str | None, ...]]:
        """Wait for the answer; every value as text (None for NULL)."""
        if self._rows is not None:
            return self._rows
        rows, error, sqlstate = self._answer()
        if (
            sqlstate == _NO_SUCH_STATEMENT
            and self._name is not None
            and self._pgconn.transaction_status == pq.TransactionStatus.IDLE
        ):
            # Something deallocated it (DISCARD ALL, a pooler): nothing ran; once more.
            _prepared.get(self._raw, set()).discard(self._name)
            self._send()
            rows, error, sqlstate = self._answer()
        self._rows = rows
        if error is not None:
            raise error
        return rows

    def _answer(
        self,
    ) -> tuple[list[tuple[str | None, ...]], PendingStatementError | None, bytes | None]:
        pgconn = self._pgconn
        pgconn.consume_input()
        while pgconn.is_busy():
            select.select([pgconn.socket], [], [])
            pgconn.consume_input()
        rows: list[tuple[str | None, ...]] = []
        error = sqlstate = None
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
                sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
        return rows, error, sqlstate
