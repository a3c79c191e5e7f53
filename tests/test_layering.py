"""The wings of ``src/relabel_store`` and the one-way rules between them (the package docstring
draws them). Every import is checked, including those inside functions and under
``TYPE_CHECKING``: a rule broken only for type checkers still couples the wings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from _installed import REPO

PACKAGE = REPO / "src" / "relabel_store"
BASE = {"errors", "_extras", "_progress", "_parallel", "images", "__init__"}
WINGS = {"format", "read", "pooling", "write", "publish", "report", "loaders", "cli"}
# What each wing may import besides itself and the base modules.
ALLOWED = {
    "format": set(),
    "pooling": set(),
    "read": {"format"},
    "write": {"read", "pooling", "format"},
    "publish": {"read", "format"},
    "report": {"read", "pooling", "format"},
    "loaders": {"read", "pooling", "format"},
    "cli": WINGS,
}


def _wing(module: str) -> str:
    """``relabel_store.read.reader`` -> ``read``; a base module -> its own name."""
    return module.split(".")[1] if module.count(".") else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "relabel_store":  # from relabel_store import X: X's home
                found += [(node.lineno, f"relabel_store.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.startswith("relabel_store.")]


def _modules() -> list[tuple[str, Path]]:
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules.append((".".join(p for p in parts if p != "__init__"), path))
    return modules


def test_every_module_lives_in_a_wing_or_the_base():
    stray = [m for m, _ in _modules() if m.count(".") == 1 and _wing(m) not in WINGS | BASE]
    stray = [m for m in stray if m.split(".")[1] not in BASE]
    assert not stray, f"modules outside every wing: {stray}"


def test_wings_import_only_downward():
    broken = []
    for module, path in _modules():
        wing = _wing(module) if module != "relabel_store" else "__init__"
        if wing in BASE:
            # the base imports no wing; the root __init__ only names the public API lazily
            allowed = WINGS if wing == "__init__" else set()
        else:
            allowed = ALLOWED[wing] | {wing}
        for line, name in _imports(path):
            target = name.split(".")[1]
            if target in WINGS and target not in allowed:
                broken.append(f"{path.relative_to(REPO)}:{line} ({wing}) imports {name}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("wing", ["loaders"])
def test_no_loader_imports_a_sibling_loader(wing):
    """Each loader adapts how it iterates; what they share lives in the loader core."""
    shared = {"_core", "_bases", "crops", "mixing", "maps", "__init__"}
    broken = []
    for module, path in _modules():
        if not module.startswith(f"relabel_store.{wing}."):
            continue
        name = module.rsplit(".", 1)[1]
        if name in shared:
            continue
        for line, target in _imports(path):
            other = target.split(".")
            if other[:2] == ["relabel_store", wing] and len(other) > 2 and other[2] not in shared:
                broken.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert not broken, "\n".join(broken)


def test_no_import_cycles_between_modules():
    """Module-level imports form no cycle (function-level ones are deferred on purpose only
    to keep a heavy dependency lazy, and still obey the wing rules above)."""
    graph: dict[str, set[str]] = {}
    known = {m for m, _ in _modules()}
    for module, path in _modules():
        tree = ast.parse(path.read_text())
        deps = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            deps |= {n for n in names if n in known and n != module}
        # a submodule's import runs its package's __init__ first: not a cycle of ours
        graph[module] = {d for d in deps if not module.startswith(d + ".")}
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        seen[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if seen.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in seen and (cycle := visit(dep)):
                return cycle
        stack.pop()
        seen[node] = 2
        return None

    for module in sorted(graph):
        if module not in seen and (cycle := visit(module)):
            pytest.fail(" -> ".join(cycle))


def _builtin_exceptions() -> set[str]:
    import builtins

    return {
        name
        for name, value in vars(builtins).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    }


def test_library_code_raises_only_relabel_store_errors():
    """Every error a caller can catch derives from RelabelStoreError (and a builtin): a bare
    ``raise ValueError(...)`` from library code breaks ``except RelabelStoreError``. Allowed:
    ``NotImplementedError`` in abstract methods, ``AssertionError`` for a broken invariant (an
    ``assert`` by another name: a bug, never a user's error), ``AttributeError`` from a module's
    ``__getattr__`` (the protocol asks for it), and re-raising a caught exception."""
    builtin = _builtin_exceptions() - {"NotImplementedError", "AssertionError"}
    bare = []

    class Raises(ast.NodeVisitor):
        def __init__(self) -> None:
            self.function = ""

        def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
            outer, self.function = self.function, node.name
            self.generic_visit(node)
            self.function = outer

        def visit_Raise(self, node: ast.Raise) -> None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = exc.id if isinstance(exc, ast.Name) else None
            allowed = name == "AttributeError" and self.function == "__getattr__"
            if name in builtin and not allowed:
                bare.append(f"{path.relative_to(REPO)}:{node.lineno} raises {name}")

    for _, path in _modules():
        Raises().visit(ast.parse(path.read_text(), str(path)))
    assert not bare, "\n".join(bare)


def test_every_public_module_declares_all():
    missing = [
        str(path.relative_to(REPO))
        for module, path in _modules()
        if not module.rsplit(".", 1)[-1].startswith("_")
        and not any(
            isinstance(node, ast.Assign | ast.AnnAssign)
            and any(
                isinstance(t, ast.Name) and t.id == "__all__"
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            )
            for node in ast.parse(path.read_text()).body
        )
    ]
    assert not missing, f"public modules without __all__: {missing}"
