"""Look for strings in every text-like column of every table, and in a folder's files."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

# Every column type that can hold a user's text (arrays and json are cast to text).
_TEXTUAL = ("text", "character varying", "character", "json", "jsonb", "ARRAY", "bytea")


def text_columns(url: str) -> list[tuple[str, str, str, str]]:
    """(schema, table, column, type) of every textual column of every user table."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.table_schema, c.table_name, c.column_name, c.data_type "
            "FROM information_schema.columns c "
            "JOIN information_schema.tables t USING (table_schema, table_name) "
            "WHERE t.table_type = 'BASE TABLE' "
            "AND c.table_schema NOT IN ('pg_catalog', 'information_schema') "
            "AND c.data_type = ANY(%s) ORDER BY 1, 2, 3",
            (list(_TEXTUAL),),
        ).fetchall()
    return [(str(s), str(t), str(c), str(d)) for s, t, c, d in rows]


def find_in_database(url: str, needles: list[str]) -> dict[str, list[str]]:
    """needle -> ["table.column", ...] where some row's value contains it."""
    found: dict[str, list[str]] = {n: [] for n in needles}
    with psycopg.connect(url) as conn:
        for schema, table, column, data_type in text_columns(url):
            test = (
                "position(convert_to(%s, 'UTF8') in {col}) > 0"
                if data_type == "bytea"
                else "strpos({col}::text, %s) > 0"
            )
            query = sql.SQL("SELECT 1 FROM {tab} WHERE " + test + " LIMIT 1").format(
                tab=sql.Identifier(schema, table), col=sql.Identifier(column)
            )
            for needle in needles:
                if conn.execute(query, (needle,)).fetchone():
                    found[needle].append(f"{table}.{column}")
    return found


def find_in_files(root: Path, needles: list[str]) -> dict[str, list[str]]:
    """needle -> files under `root` whose bytes contain it."""
    found: dict[str, list[str]] = {n: [] for n in needles}
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for needle in needles:
                if needle.encode() in data:
                    found[needle].append(str(path))
    return found
