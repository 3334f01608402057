"""`ast.parse` for the tests that read the project's own source."""

from __future__ import annotations

import ast


def parse_source(source: str) -> ast.Module:
    """`ast.parse(source)`, parsed a second time on CPython 3.11's spurious "AST constructor
    recursion depth mismatch" SystemError (python/cpython#106905: the AST builder's depth
    count goes wrong when other threads run, as a test suite's leftover threads do; a
    real syntax problem raises SyntaxError, and fails again the second time)."""
    try:
        return ast.parse(source)
    except SystemError:
        return ast.parse(source)
