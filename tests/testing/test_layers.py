"""The emulator's modules import in one direction (issue 10): framing, handlers, engines."""

from __future__ import annotations

import ast
from pathlib import Path

import outlines_lmstudio.testing as testing

PACKAGE = Path(testing.__file__).parent
# Lower layers first: a module may import (at run time or for types) only lower layers.
LAYERS = [
    {"_wire", "_surface", "_llama_integers"},
    {"_faults", "_tools", "_sampler", "_gbnf", "_llama_plan", "_llama_schema", "_llama_builder"},
    {"_records", "_drift", "_llama_native"},
    {"_scripts"},
    {"_catalogue"},
    {"_engine"},
    {"_state"},
    {"_synthetic", "_llama"},  # the engines
    {"_lookup"},
    {"_predict"},
    {"_endpoints"},
    {"_protocol"},
    {"_server"},
    {"_command", "__init__", "pytest_plugin"},
    {"__main__"},
]
RANK = {name: rank for rank, layer in enumerate(LAYERS) for name in layer}
# Known exceptions, each a lazy import: EmulatedModel(gguf=...) reads the file's facts
# with the llama.cpp engine's reader.
EXCEPTIONS = {("_catalogue", "_llama")}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("outlines_lmstudio.testing."):
                found.add(node.module.rsplit(".", 1)[1])
            elif node.module == "outlines_lmstudio.testing":
                found.update(alias.name for alias in node.names if alias.name.startswith("_"))
    return found


def test_every_import_points_down() -> None:
    upward = []
    for path in sorted(PACKAGE.glob("*.py")):
        rank = RANK.get(path.stem)
        if rank is None:
            continue  # a module not placed yet: the next line of defence is review
        for name in _imports(path):
            exempt = (path.stem, name) in EXCEPTIONS
            if name in RANK and RANK[name] >= rank and name != path.stem and not exempt:
                upward.append(f"{path.stem} imports {name}")
    assert upward == []


def test_the_layers_name_real_modules() -> None:
    present = {p.stem for p in PACKAGE.glob("*.py")}
    assert set(RANK) <= present
