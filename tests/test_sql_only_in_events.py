"""SQL lives in events/ only (ARCHITECTURE.md): every other folder of the package reaches
the database through events/ interfaces, each with an in-memory twin.

The scan reads the source (no imports) and reports, per file outside events/:
- an import of the driver (`psycopg`, `psycopg_pool`, any function-level one included);
- an import of events/db.py's raw connections (`connect`, `make_pool`, `Connection`);
- a call of `<store>.connection("...")`, which lends a raw connection of the store's pool;
- a string literal (docstrings aside) that reads as SQL.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Final

from tests.source_ast import parse_source

ROOT: Final = Path(__file__).resolve().parent.parent
# The package's folders other than events/ (tests/ is not part of the package).
FOLDERS: Final = ("schemas", "kernels", "workers", "services", "infra", "bench")
SKIP: Final = ("schemas/proto_gen/",)  # generated gRPC stubs

# Benchmark code that measures the database itself, and so must speak to it directly.
# Nothing else belongs here: move the query into events/ behind an interface instead.
ALLOWED: Final = {
    # The bare PostgreSQL COPY rate of the ingest rows: the ceiling the ingest benchmark
    # compares the pipeline with, timed on a scratch table next to `events`.
    "bench/bare_rates.py",
    # The catalog at a million adapters: fills the database with events.bulk_fill on its
    # own connections (one transaction, then VACUUM ANALYZE) and measures its size.
    "bench/catalog.py",
}

_SQL: Final = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM"
    r"|CREATE\s+(TABLE|DATABASE|INDEX)|DROP\s+(TABLE|DATABASE)|VACUUM|COPY\s+\w+\s+FROM"
    r"|ON\s+CONFLICT)\b",
    re.DOTALL,
)
_RAW_DB_NAMES: Final = {"connect", "make_pool", "Connection"}


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def offences(source: str) -> list[str]:
    """What in `source` speaks SQL or holds a raw connection, one line each."""
    tree = parse_source(source)
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [f"{line}: imports {a.name}" for a in node.names
                      if a.name.split(".")[0].startswith("psycopg")]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0].startswith("psycopg"):
                found.append(f"{line}: imports from {node.module}")
            elif node.module == "tessera.events.db":
                raw = sorted(a.name for a in node.names if a.name in _RAW_DB_NAMES)
                if raw:
                    found.append(f"{line}: imports raw connections {raw} from events.db")
            elif node.module == "tessera.events" and any(a.name == "db" for a in node.names):
                found.append(f"{line}: imports tessera.events.db")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "connection" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append(f"{line}: borrows a raw connection ({node.args[0].value!r})")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docstrings and _SQL.search(node.value)):
            found.append(f"{line}: SQL text {node.value[:50]!r}")
    return found


def _package_files() -> list[Path]:
    files = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith(SKIP):
                files.append(path)
    return files


def test_no_sql_outside_events() -> None:
    report = []
    for path in _package_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel in ALLOWED:
            continue
        report += [f"{rel}:{o}" for o in offences(path.read_text(encoding="utf-8"))]
    assert not report, (
        "SQL or raw database connections outside events/ (move the query into an events/ "
        "interface with an in-memory twin and a contract test):\n  " + "\n  ".join(report)
    )


def test_the_allowlist_is_current() -> None:
    # An entry whose file moved or no longer speaks SQL must go, so it cannot excuse
    # a newcomer later.
    for rel in sorted(ALLOWED):
        path = ROOT / rel
        assert path.is_file(), f"{rel} is allowed SQL but does not exist: update ALLOWED"
        assert offences(path.read_text(encoding="utf-8")), (
            f"{rel} no longer speaks SQL: remove it from ALLOWED"
        )


def test_the_scan_sees_each_kind_of_offence() -> None:
    source = '''
"""SELECT this FROM that is only a docstring."""
import psycopg
from psycopg_pool import ConnectionPool
from tessera.events.db import connect, translated

def f(store, conn):
    """DELETE FROM docs is fine too."""
    import psycopg.sql
    conn.execute("DELETE FROM events WHERE tenant_id = %s", ("t",))
    with store.connection("audit") as raw:
        raw.execute(f"UPDATE heads SET revision_id = {1}")
    return "Select a tenant from the list"
'''
    kinds = [o.split(": ", 1)[1].split(" ")[0:2] for o in offences(source)]
    assert sorted(" ".join(k) for k in kinds) == sorted([
        "imports psycopg", "imports from", "imports raw", "imports psycopg.sql",
        "SQL text", "borrows a", "SQL text",
    ])
