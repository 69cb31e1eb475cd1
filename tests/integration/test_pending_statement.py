"""webapp.pending_statement against the real PostgreSQL, on Django's own connection."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection

from webapp.pending_statement import PendingStatement, PendingStatementError

pytestmark = pytest.mark.django_db(transaction=True)  # autocommit, as in a worker

ECHO = "SELECT $1::bigint, $2::text, $3::timestamptz, $4::text IS NULL, $5::jsonb"
PARAMS = [7, 'it\'s "quoted"', datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC), None, '{"a": [1]}']
ANSWER = [("7", 'it\'s "quoted"', "2024-05-06 07:08:09+00", "t", '{"a": [1]}')]


@pytest.mark.parametrize("prepare_as", [None, "test_echo"])
def test_parameters_go_as_text_and_rows_come_back_as_text(prepare_as):
    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
    statement = PendingStatement(ECHO, PARAMS, prepare_as=prepare_as)
    assert statement.rows() == ANSWER
    assert statement.rows() == ANSWER  # answered once, kept
    # Prepared once per connection, then used as it is.
    assert PendingStatement(ECHO, PARAMS, prepare_as=prepare_as).rows() == ANSWER
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = 'test_echo'")
        assert cursor.fetchone()[0] == (prepare_as is not None)


def test_a_statement_deallocated_behind_its_back_is_prepared_again():
    assert PendingStatement("SELECT $1::int + 1", [1], prepare_as="test_plus").rows() == [("2",)]
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # as DISCARD ALL or a pooler would
    assert PendingStatement("SELECT $1::int + 1", [2], prepare_as="test_plus").rows() == [("3",)]


def test_a_refused_statement_raises_with_the_servers_message_and_the_connection_goes_on():
    statement = PendingStatement("SELECT 1 / $1::int", [0], prepare_as="test_divide")
    with pytest.raises(PendingStatementError, match="division by zero"):
        statement.rows()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
