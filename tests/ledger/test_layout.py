"""The shape of ledger/ that lets an auditor read it in one sitting.

The verifier path imports only the standard library, ``cryptography`` and itself; so does the
witness program (ledger/witness), with ledger.keys beside the verifier path; no module of
ledger/ imports another that imports it back, counting imports inside functions; and no module
is over 800 lines. Read from the source text (ast), so an import that runs only on some path
counts as much as one that runs at start.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.paths import ROOT

LEDGER = ROOT / "ledger"
VERIFIER_PATH = {
    "ledger",
    "ledger.audit",
    "ledger.audit.checkpoints",
    "ledger.audit.driver",
    "ledger.audit.errors",
    "ledger.audit.evidence",
    "ledger.audit.explain",
    "ledger.audit.source",
    "ledger.audit.state",
    "ledger.audit.stream",
    "ledger.checkpoint",
    "ledger.cosignature",
    "ledger.encoding",
    "ledger.entry",
    "ledger.jcs",
    "ledger.keyset",
    "ledger.merkle",
    "ledger.note",
    "ledger.policy",
    "ledger.receipt",
    "ledger.tiles",
    "ledger.tiles.layout",
    "ledger.tiles.reader",
    "ledger.untrusted",
    "ledger.verify",
}
MAX_LINES = 800


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(LEDGER.rglob("*.py")):
        parts = ["ledger", *path.relative_to(LEDGER).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports anywhere in its text, absolute, as written."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            prefix = ".".join([*base, node.module] if node.module else base)
            if not node.level:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{a.name}" for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = set()
        for imported in _imports(name, path):
            while imported and imported not in modules:  # `from m import f`: m is the module
                imported = imported.rpartition(".")[0]
            if not imported:
                continue  # not a module of ledger/
            # Importing a.b.c runs the packages a and a.b first: their imports count too,
            # unless `name` is inside them (then they are already running).
            parts = imported.split(".")
            for k in range(1, len(parts) + 1):
                dep = ".".join(parts[:k])
                if dep != name and not name.startswith(dep + "."):
                    deps.add(dep)
        graph[name] = deps
    return graph


def test_the_verifier_path_needs_only_the_standard_library_and_cryptography() -> None:
    modules = _modules()
    assert VERIFIER_PATH <= set(modules), VERIFIER_PATH - set(modules)
    for name in sorted(VERIFIER_PATH):
        for imported in _imports(name, modules[name]):
            top = imported.split(".")[0]
            if top == "ledger":
                owner = imported
                while owner not in modules:
                    owner = owner.rpartition(".")[0]
                assert owner in VERIFIER_PATH, f"{name} imports {owner}, off the verifier path"
            else:
                assert top in sys.stdlib_module_names or top == "cryptography", (name, imported)


def test_the_witness_program_needs_only_the_standard_library_and_cryptography() -> None:
    """Everything ledger.witness imports, transitively, is the standard library,
    ``cryptography`` or a module of ledger/ that is itself that: a health authority runs the
    witness without SQLAlchemy, FastAPI or the exchange service."""
    modules = _modules()
    graph = _graph()
    todo = [m for m in modules if m == "ledger.witness" or m.startswith("ledger.witness.")]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for imported in _imports(name, modules[name]):
            top = imported.split(".")[0]
            assert top in sys.stdlib_module_names or top in ("cryptography", "ledger"), (
                name,
                imported,
            )
        todo.extend(graph[name])
    assert {"ledger.witness.server", "ledger.policy", "ledger.keys"} <= seen
    assert not seen & {"ledger.store", "ledger.log", "ledger.hash_cache"}


def test_no_import_cycle_within_ledger() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name) :] + [name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_no_module_over_800_lines() -> None:
    sizes = {n: len(p.read_text(encoding="utf-8").splitlines()) for n, p in _modules().items()}
    assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}
