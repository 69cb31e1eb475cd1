"""Fast bulk upsert through PostgreSQL COPY.

Django's bulk_create spends most of its time compiling SQL for every row; a mail sync writes
tens of thousands of rows, so it streams them with COPY into a temporary table and upserts
from there in one statement.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection, models
from psycopg import sql
from psycopg.types.json import Jsonb


def copy_upsert(
    model: type[models.Model],
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    conflict: Sequence[str],
    update: Sequence[str],
    returning: Sequence[str] = ("id",),
) -> list[tuple]:
    """Insert `rows` (values in `columns` order); on a `conflict` key, update `update`.

    JSON columns take Python lists/dicts. Must run inside a transaction (the staging table
    is dropped at commit). Returns the `returning` columns of every inserted or updated row.
    """
    table = model._meta.db_table
    fields = {f.column: f for f in model._meta.concrete_fields}
    json_columns = {c for c in columns if isinstance(fields[c], models.JSONField)}
    staging = sql.Identifier(f"_staging_{table}")
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        cursor.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DROP AS "
                "SELECT {} FROM {} WITH NO DATA"
            ).format(staging, names, sql.Identifier(table))
        )
        with cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(staging, names)) as copy:
            positions = [i for i, c in enumerate(columns) if c in json_columns]
            for row in rows:
                values = list(row)
                for i in positions:
                    values[i] = Jsonb(values[i])
                copy.write_row(values)
        upsert = sql.SQL(
            "INSERT INTO {table} ({names}) SELECT {names} FROM {staging} "
            "ON CONFLICT ({conflict}) DO UPDATE SET {updates} RETURNING {returning}"
        ).format(
            table=sql.Identifier(table),
            names=names,
            staging=staging,
            conflict=sql.SQL(", ").join(map(sql.Identifier, conflict)),
            updates=sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in update
            ),
            returning=sql.SQL(", ").join(map(sql.Identifier, returning)),
        )
        cursor.execute(upsert)
        result = cursor.fetchall()
        cursor.execute(sql.SQL("TRUNCATE {}").format(staging))
        return result
