"""No module of the package reaches into another's private members: ``x._name`` (one
leading underscore, not a dunder) is read or written only on ``self`` or ``cls``, or
when ``_name`` is the module's own (a module-level name, or a method or attribute a
class of that module defines), so that each layer's insides can change on their own."""

from __future__ import annotations

import ast
from pathlib import Path

import absurd

PACKAGE = Path(absurd.__file__).parent

#: (module, attribute): the exceptions, each with its reason.
#: Nothing is allowed: the set stays for a justified exception, each with its reason.
ALLOWED: set[tuple[str, str]] = set()


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def own_names(tree: ast.Module) -> set[str]:
    """The private names a module defines: module-level names, and the methods,
    class attributes and ``self._x``/``cls._x`` attributes of its classes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[0])
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            names.add(node.attr)
    return {n for n in names if is_private(n)}


def foreign_accesses(source: str) -> list[tuple[int, str]]:
    """(line, ``x._name``) for each access to another module's private member."""
    tree = ast.parse(source)
    own = own_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not is_private(node.attr):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        if node.attr in own:
            continue
        found.append((node.lineno, f"{ast.unparse(node.value)}.{node.attr}"))
    return found


def test_no_module_reads_another_modules_private_members() -> None:
    offences = []
    used = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        for line, access in foreign_accesses(path.read_text("utf-8")):
            key = (module, access.rsplit(".", 1)[1])
            if key in ALLOWED:
                used.add(key)
                continue
            offences.append(f"{module}:{line}: {access}")
    assert offences == []
    assert used == ALLOWED, f"allowed but no longer needed: {ALLOWED - used}"


def test_the_check_finds_a_foreign_private_member() -> None:
    """What the old worker did: the client's private members, read and planted."""
    source = (
        "class Worker:\n"
        "    def run(self):\n"
        "        self.app._writes = self.writes\n"
        "        return self.app._rows('select 1')\n"
    )
    assert foreign_accesses(source) == [(3, "self.app._writes"), (4, "self.app._rows")]


def test_the_modules_own_private_members_and_self_are_fine() -> None:
    source = (
        "_CACHE = {}\n"
        "class A:\n"
        "    def __init__(self):\n"
        "        self._x = 1\n"
        "    def _m(self, other):\n"
        "        return other._x, _CACHE, self._y, type(self).__name__\n"
        "def make():\n"
        "    a = A()\n"
        "    a._m(a)\n"
    )
    assert foreign_accesses(source) == []
