"""Imports run one way: deployments -> flows -> tasks -> batchscribe, read from the source files themselves."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["batchscribe", "tasks", "flows", "deployments"]  # each may import only the ones before it


def imports(path: Path) -> set[str]:
    """Top-level packages and modules of this project that `path` imports, lazily (inside functions) too."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in LAYERS}


def sources(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


def test_every_layer_imports_only_the_layers_below_it() -> None:
    wrong = []
    for rank, layer in enumerate(LAYERS):
        allowed = set(LAYERS[: rank + 1])
        for path in sources(layer):
            wrong += [
                f"{path.relative_to(ROOT)} imports {name}"
                for name in imports(path)
                if name.split(".")[0] not in allowed
            ]
    assert not wrong, "\n".join(wrong)


def test_tasks_do_not_import_each_other() -> None:
    # What stages hand each other lives in the library (batchscribe.media, batchscribe.audio, ...).
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sources("tasks")
        for name in imports(path)
        if name.startswith("tasks")
    ]
    assert not wrong, "\n".join(wrong)


def test_no_module_reaches_into_another_modules_private_names() -> None:
    wrong = []
    for layer in LAYERS:
        for path in sources(layer):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LAYERS:
                    wrong += [
                        f"{path.relative_to(ROOT)}: {node.module}.{a.name}"
                        for a in node.names
                        if a.name.startswith("_")
                    ]
    assert not wrong, "\n".join(wrong)
