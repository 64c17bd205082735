"""Imports go one way: no module imports one of a later layer, and no modules import each
other in a circle (imports inside functions and for type checking included)."""

from __future__ import annotations

import ast
from pathlib import Path

import bridge

PACKAGE = Path(bridge.__file__).parent

# Earlier layers may not import later ones; a module belongs to its longest prefix here.
LAYERS: list[tuple[str, ...]] = [
    (
        "bridge",
        "bridge.errors",
        "bridge.documents",
        "bridge.schema",
        "bridge.owners",
        "bridge.names",
    ),
    ("bridge.permissions", "bridge.extras"),
    ("bridge.atomic", "bridge.manifest", "bridge.background"),
    # Model files' configs, read (without torch) when a model is named by its file.
    ("bridge.models.families.msst_config", "bridge.models.families.uvr_params"),
    # The registry of imported model folders: the catalog looks imported names up there.
    # A lineup (which models give which stems) is data the settings check.
    (
        "bridge.models.catalog",
        "bridge.models.registry",
        "bridge.models.lineup",
        "bridge.stems",
        "bridge.settings",
    ),
    ("bridge.audio", "bridge.models", "bridge.effects", "bridge.pictures"),
    ("bridge.pipeline",),
    (
        "bridge.jobs",
        "bridge.broker.url",
        "bridge.broker.paths",
        "bridge.broker.channel",
        "bridge.evaluate",
    ),
    ("bridge.hosts", "bridge.config"),
    ("bridge.watch", "bridge.broker.dispatcher", "bridge.broker.remote"),
    ("bridge.dashboard", "bridge.daemon"),
    ("bridge.cli", "bridge.__main__"),
]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            candidates = [target, *(f"{target}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c in known and c != name)
    return found


def layer(name: str) -> int:
    matches = [
        (len(prefix), index)
        for index, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if name == prefix or name.startswith(prefix + ".")
    ]
    assert matches, f"{name} is in no layer; add it to LAYERS"
    return max(matches)[1]


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def test_no_module_imports_a_later_layer() -> None:
    backwards = [
        f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
        for name, targets in graph().items()
        for target in sorted(targets)
        if layer(target) > layer(name)
    ]
    assert backwards == []


def test_no_import_cycles() -> None:
    edges = graph()
    cycles = []
    for start in sorted(edges):
        # Depth-first from each module; a path back to it is a cycle.
        stack, seen = [(start, (start,))], set()
        while stack:
            node, trail = stack.pop()
            for target in edges[node]:
                if target == start:
                    cycles.append(" -> ".join([*trail, start]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, (*trail, target)))
    assert cycles == []


def test_the_checks_see_a_backward_import_and_a_cycle() -> None:
    # The rules themselves, on a made-up pair, so the two tests above cannot pass vacuously
    assert layer("bridge.pipeline.run") > layer("bridge.atomic")
    assert layer("bridge.jobs.store") > layer("bridge.pipeline.spec")
    assert layer("bridge.models.catalog") < layer("bridge.models.loaded")
    edges = graph()
    assert "bridge.pipeline.run" in edges["bridge.jobs.worker"]
