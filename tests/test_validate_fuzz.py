"""`aimc validate` over mutated versions of every example experiment file: never a traceback, always exit code 2
with the problem's path (or 0 when the mutation happens to be valid).

A fixed corpus (every node of every example: deleted, key renamed, value replaced by wrong types, NaN/inf/negatives,
wrongly nested) plus file-level damage (empty, non-mapping, garbage YAML), and a derandomized hypothesis search over
combinations of several mutations. Runs in seconds: validation reads no data and builds no model.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimc.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
BAD_VALUES = [None, "text", -1, 0, 2.5, math.nan, math.inf, True, [None, "x"], {"bogus": 1}]
CONTAINER_VALUES = [None, "text", -1, [], {}]
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
PROBLEM = re.compile(r"^  - (\S+): ", re.M)


def _nodes(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _nodes(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _nodes(v, (*path, i))


def _dotted(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _parent(doc, path):
    node = doc
    for p in path[:-1]:
        node = node[p]
    return node


def mutate(doc: dict, path: tuple, how: str, value=None) -> tuple[dict, str]:
    """The mutated document and the path (in the file's notation) where the problem is expected."""
    doc = copy.deepcopy(doc)
    parent, last = _parent(doc, path), path[-1]
    if how == "delete":
        del parent[last]
    elif how in ("rename", "typo"):
        new = f"{last}_x" if how == "rename" else str(last)[:-1] or "x"
        parent[new] = parent.pop(last)
        return doc, _dotted((*path[:-1], new))
    elif how == "replace":
        parent[last] = value
    elif how == "nest_list":
        parent[last] = [parent[last]]
    elif how == "nest_map":
        parent[last] = {"value": parent[last]}
    return doc, _dotted(path)


def corpus(doc: dict):
    """Every node: deleted, key misspelt, replaced by values of other types (containers by fewer), nested wrongly.
    In lists of scalars (times, compensations) only the first element is mutated: the others behave alike."""
    for path in _nodes(doc):
        if not path or (isinstance(path[-1], int) and path[-1] > 0 and not isinstance(_parent(doc, path)[0], dict)):
            continue
        parent, node = _parent(doc, path), _parent(doc, path)[path[-1]]
        yield path, "delete", None
        if isinstance(parent, dict):
            yield path, "typo", None
        for v in CONTAINER_VALUES if isinstance(node, (dict, list)) else BAD_VALUES:
            if type(v) is not type(node) or isinstance(v, float):
                yield path, "replace", v
        yield path, "nest_list", None
        if not isinstance(node, (dict, list)):
            yield path, "nest_map", None


def validate(tmp_path: Path, text: str) -> tuple[int, str, Path]:
    f = tmp_path / "mutated.yaml"
    f.write_text(text)
    r = CliRunner().invoke(app, ["validate", str(f)])
    assert r.exception is None or isinstance(r.exception, SystemExit), (
        f"{type(r.exception).__name__}: {r.exception}\n{text}")
    assert "Traceback" not in r.output and r.exit_code in (0, 2), r.output
    if r.exit_code == 2:
        assert r.output.startswith("error: ") and str(f) in r.output, r.output
    return r.exit_code, r.output, f


def related(reported: str, where: str) -> bool:
    """A reported problem points at the mutation: its path is the mutated one, inside it, above it or beside it
    (same parent). (`check` also accepts a problem elsewhere that names the changed value or section: a renamed
    stage or analog config is reported where it is referred to.)"""
    parent = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", where)
    return (reported.startswith(where) or where.startswith(reported)
            or (parent != where and reported.startswith(parent)))


def check(tmp_path, doc, path, how, value):
    mutated, where = mutate(doc, path, how, value)
    rc, out, _ = validate(tmp_path, yaml.dump(mutated, Dumper=DUMPER, sort_keys=False))
    if rc == 2:
        paths = PROBLEM.findall(out)
        assert paths, out
        original = _parent(doc, path)[path[-1]]
        names_it = (isinstance(original, str) and repr(original) in out) or any(f"`{c}`" in out for c in path)
        assert any(related(p, where) for p in paths) or names_it, (how, where, value, out)
    return rc


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_single_mutation_of_an_example(example, tmp_path):
    doc = yaml.load(example.read_text(), Loader=LOADER)
    rcs = [check(tmp_path, doc, path, how, value) for path, how, value in corpus(doc)]
    assert len(rcs) > 200 and rcs.count(2) > 0.8 * len(rcs)  # the corpus really probes (most mutations are wrong)


def _text_mutations(text: str):
    lines = text.splitlines(keepends=True)
    yield "empty", ""
    yield "comment only", "# nothing here\n"
    yield "a list", "- name: x\n- model: y\n"
    yield "a number", "42\n"
    yield "a string", "just some words\n"
    yield "null", "~\n"
    yield "binary garbage", "\x00\x01\x02 name: [\n"
    yield "unclosed bracket", text.replace("]", "", 1)
    yield "unclosed brace", text.replace("}", "", 1)
    yield "tab indentation", text.replace("\n  ", "\n\t", 3)
    yield "bad indentation", re.sub(r"\n  (\w)", r"\n   \1", text, count=1)
    yield "duplicated colon", text.replace(": ", ":: ", 1)
    yield "unhashable key", "? [a, b]\n: 1\n" + text
    yield "an alias to nothing", text + "extra: *nowhere\n"
    yield "a tag", text.replace("seed: 0", "seed: !!python/object:os.system 0", 1)
    yield "1e400 and friends", text.replace("times: [", "times: [1e400, -1, .nan, .inf, ", 1)
    for n in (1, 3, len(lines) // 3, len(lines) // 2, len(lines) - 2):  # truncated files
        yield f"truncated to {n} lines", "".join(lines[:n])
    yield "truncated mid-line", text[: len(text) // 2 + 7]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_damaged_files(example, tmp_path):
    text = example.read_text()
    for what, bad in _text_mutations(text):
        rc, out, _ = validate(tmp_path, bad)
        assert rc in (0, 2), what
        if what in ("empty", "comment only", "null"):
            assert rc == 2 and "name: required" in out and "model: required" in out, out
        if what in ("a list", "a number", "a string"):
            assert rc == 2 and "(top level)" in out and "expected a mapping" in out, out
        if what in ("unclosed bracket", "unclosed brace", "tab indentation", "unhashable key"):
            assert rc == 2 and re.search(r"YAML syntax error at line \d+", out), (what, out)
        if what == "1e400 and friends":  # every bad time, not only the first
            assert rc == 2 and all(f"times[{i}]" in out for i in range(4)), out


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
@settings(derandomize=True, database=None, max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_combined_mutations(example, tmp_path, data):
    """Two to four mutations at once (hypothesis, derandomized: the same examples on every run)."""
    doc = yaml.load(example.read_text(), Loader=LOADER)
    for _ in range(data.draw(st.integers(2, 4), label="n")):
        paths = [p for p in _nodes(doc) if p]
        path = data.draw(st.sampled_from(paths), label="path")
        how = data.draw(st.sampled_from(["delete", "rename", "typo", "replace", "nest_list", "nest_map"]))
        if how in ("rename", "typo") and not isinstance(_parent(doc, path), dict):
            how = "delete"
        value = data.draw(st.sampled_from(BAD_VALUES)) if how == "replace" else None
        doc, _ = mutate(doc, path, how, value)
    validate(tmp_path, yaml.dump(doc, Dumper=DUMPER, sort_keys=False))


def test_unreadable_inputs(tmp_path):
    """Not UTF-8, a directory, a missing file, TOML syntax: one line each, exit code 2, never a traceback."""
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    toml = tmp_path / "e.toml"
    toml.write_text("name = [\n")
    for target, expected in ((bad, "cannot read experiment file"), (tmp_path, "is a directory"),
                             (tmp_path / "nope.yaml", "does not exist"), (toml, "TOML syntax error")):
        r = CliRunner().invoke(app, ["validate", str(target)])
        assert r.exit_code == 2 and expected in r.output and "Traceback" not in r.output, r.output
