"""Layering of the aimc package (issue 18 item 8): no import cycle, and every import goes down the layer table.

The imports are read from the source with ``ast`` (module-level and function-level ``import`` / ``from ... import``,
``TYPE_CHECKING`` blocks included), so a cycle hidden in a function body fails here as well as one at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Layers, bottom-up (DESIGN.md "Layering"): a module may import its own layer and the layers below it, never one
# above. Keys are packages or modules; a module takes the layer of its longest matching key. ``"aimc"`` matches the
# package's ``__init__`` (the public facade) only: every module of aimc must have its own entry, so a new package
# has to be placed here on purpose.
LAYERS: dict[str, int] = {
    # 0: errors and dependency-free helpers
    "aimc.errors": 0, "aimc._checks": 0, "aimc._files": 0,
    "aimc.rng": 0,  # counter-based random streams (pure torch; arrives with the rng work)
    # 1: pure tensor device models; data loaders and plain-torch reference networks (they need only the errors)
    "aimc.devices": 1, "aimc.data": 1, "aimc.models": 1,
    # 2: configuration and the published configurations
    "aimc.config": 2, "aimc.presets": 2,
    # 3: weights <-> conductances, DAC/ADC and output noise
    "aimc.mapping": 3, "aimc.periphery": 3,
    # 4: the analog layers with their training forward (weight noise aimc.nn.noise, MVMs through the periphery
    #    aimc.nn.train_periphery / hwa_periphery) and convert
    "aimc.nn": 4,
    "aimc.nn.audit": 5,  # runs program / at_time on a converted copy to check what is computed analog
    # 5: model-level work on converted models: program / at_time, compensation, evaluation, metrics, save / load,
    #    measured conductances of a chip attached to a model
    "aimc.inference": 5, "aimc.compensation": 5, "aimc.evaluation": 5, "aimc.metrics": 5, "aimc.io": 5,
    "aimc.measured": 5,
    # 6: training (hardware-aware noise, clipping, mixed precision, distillation)
    "aimc.train": 6,
    # 7: LLM helpers (model-level conversion and training recipes for language models)
    "aimc.llm": 7,
    # 8: experiment files: specification, schema, results store, model/data building, the run's stages
    "aimc.experiment": 8,
    # 9: cost model and the HTML report (both read experiment files)
    "aimc.cost": 9, "aimc.report": 9,
    # 10: running an experiment end to end (its last step writes the report), the CLI, the demo, the facade
    "aimc.experiment.runner": 10, "aimc.experiment.summary": 10,
    "aimc.cli": 10, "aimc.cli_devices": 10, "aimc.demo": 10, "aimc": 10,
}


def _modules() -> dict[str, tuple[Path, bool]]:
    """{dotted name: (path, is package __init__)} of every module under src/aimc."""
    out = {}
    for p in sorted((SRC / "aimc").rglob("*.py")):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def _imports(mods: dict[str, tuple[Path, bool]]) -> dict[str, set[str]]:
    """{module: aimc modules it imports anywhere in its body}; ``from pkg import sub`` counts as ``pkg.sub``."""

    def known(name: str) -> str:  # the longest prefix that is a module of aimc
        while name not in mods and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    edges: dict[str, set[str]] = {}
    for mod, (path, is_pkg) in mods.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {known(a.name) for a in node.names if a.name.split(".")[0] == "aimc"}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = ".".join(pkg[:len(pkg) - node.level + 1] + ([base] if base else []))
                if base.split(".")[0] != "aimc":
                    continue
                found |= {known(f"{base}.{a.name}") if f"{base}.{a.name}" in mods else known(base)
                          for a in node.names}
        edges[mod] = found - {mod}
    return edges


def _layer(mod: str) -> int:
    key = mod
    while key not in LAYERS or (key == "aimc" and mod != "aimc"):
        if "." not in key:
            raise KeyError(mod)
        key = key.rsplit(".", 1)[0]
    return LAYERS[key]


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in sorted(edges):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(edges[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(edges.get(nxt, ()))))
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return _imports(_modules())


def test_graph_is_read(graph):
    """The parser sees the imports it must see (a parser that found nothing would pass every other test)."""
    assert len(graph) > 50
    assert "aimc.errors" in graph["aimc.config.parts"]
    assert "aimc.config.parts" in graph["aimc.config.analog"]
    assert "aimc.nn.convert" in graph["aimc.inference"]  # a function-level or module-level import
    assert "aimc.nn.convert" in graph["aimc"]  # the facade's re-export


def test_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle(graph):
    cyc = _cycle(graph)
    assert cyc is None, "import cycle inside aimc: " + " -> ".join(cyc)


def test_every_module_has_a_layer(graph):
    missing = []
    for mod in graph:
        try:
            _layer(mod)
        except KeyError:
            missing.append(mod)
    assert not missing, f"modules without a layer in tests/test_layering.py LAYERS: {missing}"


def test_imports_go_down_the_layers(graph):
    up = sorted(f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
                for a, bs in graph.items() for b in bs if _layer(b) > _layer(a))
    assert not up, "imports that go up the layering:\n" + "\n".join(up)


def test_mixed_precision_sets_only_declared_layer_attributes():
    """MixedPrecision's hook on the layers is a declared, documented attribute (``aimc_train_mvm``), not a hidden
    entry in ``layer.__dict__``: every attribute it adds to a layer instance exists on the layer's class."""
    import torch
    from torch import nn

    import aimc
    from aimc.nn.convert import analog_layers
    from aimc.train import MixedPrecision

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(6, 2))
    lstm = nn.LSTM(4, 3)
    for model in (aimc.convert(net, aimc.presets.joshi2020()), aimc.convert(lstm, aimc.presets.joshi2020())):
        layers = [layer for _, layer in analog_layers(model)]
        before = [set(layer.__dict__) for layer in layers]
        opt = MixedPrecision(model, lr=0.1, seed=0)
        for layer, keys in zip(layers, before):
            added = set(layer.__dict__) - keys
            assert added, "MixedPrecision attached nothing to the layer"
            hidden = sorted(k for k in added if not hasattr(type(layer), k))
            assert not hidden, f"{type(layer).__name__}: undeclared attributes {hidden}"
            assert layer.aimc_train_mvm is not None
        opt.detach()
        assert all(layer.aimc_train_mvm is None for layer in layers)
