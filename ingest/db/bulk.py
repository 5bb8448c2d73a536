"""Many rows in one statement: a table written from a row dataclass, as `unnest` arrays (for
upserts) or a COPY. Column names and SQL types come from the table and the dataclass, so a
column is declared once, in `ingest.db.tables` and the row type."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql

from ingest.db.driver import Db

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")


@dataclass(frozen=True)
class Target(Generic[R]):
    """One table as written from one row type: column list, SQL types, row -> record."""

    table: str
    columns: tuple[str, ...]
    sql_types: tuple[str, ...]
    record: Callable[[R], tuple[object, ...]]

    @classmethod
    def of(cls, table: Table, row_type: type[R]) -> Target[R]:
        """The dataclass's fields, in order, name the columns it fills."""
        columns = tuple(f.name for f in dataclasses.fields(row_type))
        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        sql_types = tuple(table.c[name].type.compile(dialect=dialect) for name in columns)
        return cls(table.name, columns, sql_types, operator.attrgetter(*columns))

    @property
    def names(self) -> str:
        """The quoted column list: `"id", "status", ...`."""
        return ", ".join(f'"{c}"' for c in self.columns)

    def unnest_select(self) -> str:
        """`SELECT * FROM unnest($1::type[], ...)`: one array parameter per column."""
        arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(self.sql_types, start=1))
        return f"SELECT * FROM unnest({arrays})"

    def arrays(self, rows: Sequence[R]) -> list[list[object]]:
        """The rows as one list per column (the unnest parameters)."""
        columns: list[list[object]] = [[] for _ in self.columns]
        for record in map(self.record, rows):
            for column, value in zip(columns, record, strict=True):
                column.append(value)
        return columns

    def insert(self, conflict: str) -> str:
        return f"INSERT INTO {self.table} AS t ({self.names}) {self.unnest_select()} {conflict}"

    def set_all(self, *keep: str) -> str:
        """Every column from the new row, but those in `keep` (the key, or set otherwise)."""
        return ", ".join(f'"{c}" = excluded."{c}"' for c in self.columns if c not in keep)

    async def copy(self, db: Db, rows: Sequence[R]) -> None:
        await db.copy_records_to_table(
            self.table, records=map(self.record, rows), columns=self.columns
        )
