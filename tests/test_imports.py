"""Imports point down the data flow: the tasks sit on top, the model at the bottom (read with `ast`, nothing run)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "xling"
# the entry points that dispatch to the tasks (the CLI, the playground server: top layers), and the registry that
# lists their config sections and evaluations
MAY_IMPORT_TASKS = {"xling.cli", "xling.stages", "xling.registry", "xling.serve.server", "xling.serve.playground",
                    "xling.serve.search"}


def _imports(path: Path) -> set[str]:
    """The xling modules `path` imports anywhere (top level or inside a function), `if TYPE_CHECKING:` excluded."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body for n in ast.walk(child)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("xling"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("xling")}
    return out


def _modules() -> dict[str, set[str]]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        mods[name] = _imports(path) - {name}
    return mods


def test_only_the_entry_points_import_the_tasks():
    upward = {m: sorted(d for d in deps if d.startswith("xling.tasks"))
              for m, deps in _modules().items() if not m.startswith("xling.tasks") and m not in MAY_IMPORT_TASKS}
    assert {m: d for m, d in upward.items() if d} == {}


def test_the_model_imports_nothing_of_xling():
    assert _modules()["xling.model"] == set()


def test_no_import_cycle():
    mods = _modules()

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for dep in mods.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    cycles = {tuple(sorted((a, b))) for a, deps in mods.items() for b in deps if b in mods and a in reach(b)}
    assert sorted(cycles) == []
