"""The layout rules of ARCHITECTURE.md, checked on the source tree: small modules, few at the
top, no framework imports in the engine, no import cycles, subpackage dependencies one way."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "retgen_engine"

# A subpackage may import only from those listed before it (and the top-level config).
# config.py and checks.py are leaves every layer may read
LAYERS = ["persist", "text", "ngram", "search", "docstore", "memory", "lm", "learn"]
ALLOWED = {
    "persist": set(),
    "text": set(),
    "ngram": {"text"},
    "search": {"text", "ngram"},
    "docstore": {"persist", "search"},
    "memory": {"persist", "text", "docstore"},
    "lm": {"text", "ngram", "search", "memory"},
    "learn": {"persist", "text", "ngram", "search", "memory", "lm"},
}


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in PKG.rglob("*.py")}


def imports(name: str, path: Path) -> set[str]:
    """The ``retgen_engine`` modules ``name`` imports (relative imports resolved)."""
    pkg = name.split(".")[:-1]  # the package a relative import starts from
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            if not mod.startswith("retgen_engine"):
                continue
            subs = {f"{mod}.{a.name}" for a in node.names} & set(modules())
            out |= subs or {mod}  # "from . import codes" imports the module, not the package
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("retgen_engine")}
    return {m for m in out if m in modules() or f"{m}.__init__" in modules()}


def test_modules_are_small_and_few_at_the_top():
    sizes = {n: len(p.read_text(encoding="utf-8").splitlines()) for n, p in modules().items()}
    assert not {n: s for n, s in sizes.items() if s > 400}, "modules over 400 lines"
    top = [p.name for p in PKG.glob("*.py")]
    assert len(top) <= 8, top
    assert {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(LAYERS)


def test_no_framework_imports_in_the_engine():
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        for fw in ("langchain", "llama_index"):
            assert f"import {fw}" not in text and f"from {fw}" not in text, (name, fw)


def test_no_import_cycles():
    graph = {n: {m.removesuffix(".__init__") for m in imports(n, p)} - {n.removesuffix(".__init__")}
             for n, p in modules().items()}
    graph = {n.removesuffix(".__init__"): deps for n, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in graph.get(n, ()):
            if m not in graph:
                continue
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack + [n, m]))
            if not state.get(m):
                visit(m, stack + [n])
        state[n] = 2

    for n in graph:
        if not state.get(n):
            visit(n, [])


def test_subpackages_depend_one_way():
    bad = []
    for name, path in modules().items():
        parts = name.split(".")
        if len(parts) < 3:
            continue  # the top-level modules compose everything
        layer = parts[1]
        for m in imports(name, path):
            mp = m.split(".")
            dep = mp[1] if len(mp) > 1 else ""
            if dep in LAYERS and dep != layer and dep not in ALLOWED[layer]:
                bad.append(f"{name} imports {m}")
            if len(mp) == 2 and dep not in LAYERS and dep not in ("config", "checks", "__init__"):
                bad.append(f"{name} imports the top-level {m}")
    assert not bad, bad
