"""The tools' SQL lives in the catalogue: no string in ``src/`` calls an ``absurd.`` function.

Every statement the CLI, Habitat, storage maintenance and the schema installer send is
a named block of ``sql/queries.sql`` (see ``absurd/queries.py``). This test reads the
package's Python with :mod:`ast` and fails on any string literal, or constant part of an
f-string, that holds a call of a function in schema ``absurd`` (``absurd.name(``).
Docstrings are documentation, not statements, and are not checked.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
#: Where the SQL is allowed: the catalogue itself and its loader.
CATALOGUE = {SRC / "absurd" / "queries.py"}

#: ``absurd.name(`` or ``absurd."name"(`` (prose such as "absurd.sql (the file)" is not).
CALL = re.compile(r'\babsurd\s*\.\s*(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)\(', re.IGNORECASE)


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes of the module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _texts(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, text) of each string: a constant, or an f-string with every replacement
    field standing in as ``x`` (so ``f"select absurd.{name}(..."`` still reads as a call)."""
    skip = _docstrings(tree)
    inside_fstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                inside_fstrings.add(id(value))
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    parts.append(value.value)
                else:
                    parts.append("x")
            yield node.lineno, "".join(parts)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in skip
            and id(node) not in inside_fstrings
        ):
            yield node.lineno, node.value


def offences(root: Path) -> list[str]:
    """``path:line: text`` of every string under ``root`` that calls an absurd function."""
    out = []
    for path in sorted(root.rglob("*.py")):
        if path in CATALOGUE:
            continue
        tree = ast.parse(path.read_text("utf-8"), str(path))
        for line, text in _texts(tree):
            if CALL.search(text):
                out.append(f"{path.relative_to(root)}:{line}: {text.strip()[:80]!r}")
    return out


def test_no_sql_calls_outside_the_catalogue() -> None:
    found = offences(SRC)
    assert not found, "move these statements into src/absurd/sql/queries.sql:\n" + "\n".join(found)


def test_the_check_sees_literals_fstrings_and_composed_sql(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        '"""Calls absurd.spawn_task(...) (a docstring: fine)."""\n'
        'a = "select * from absurd.spawn_task(%s)"\n'
        'b = f"select absurd.{fn}(%s, %s)"\n'
        "c = sql.SQL('select absurd.\"drop_queue\"({})')\n"
        "d = 'select absurd.t_q'\n"
        "f = 'apply absurd.sql (it converges)'\n"
        'e = "absurd." + "x"\n',
        "utf-8",
    )
    found = offences(tmp_path)
    assert sorted(f.split(":")[1] for f in found) == ["2", "3", "4"], found
