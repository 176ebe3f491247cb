"""Packaging: what pyproject.toml declares matches what src/ imports, and `import aimc` gives torchvision-style
access to the subpackages without importing them up front."""

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "aimc"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# import name -> distribution name, where they differ
DIST = {"sklearn": "scikit-learn", "yaml": "pyyaml"}


def _req_name(req: str) -> str:
    return re.match(r"[A-Za-z0-9_.\-]+", req).group(0).lower().replace("_", "-")


def _catches_import_error(node: ast.Try) -> bool:
    for h in node.handlers:
        names = [h.type] if not isinstance(h.type, ast.Tuple) else list(h.type.elts)
        if any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names):
            return True
    return False


def third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party modules imported by src/aimc: name -> {"required"} and/or {"optional"}.

    A package imported anywhere inside ``try: ... except ImportError`` (which turns the missing package into an aimc
    error saying how to install it) is optional; every other one is required."""
    found: dict[str, set[str]] = {}

    def visit(node: ast.AST, optional: bool) -> None:
        if isinstance(node, ast.Try) and _catches_import_error(node):
            for child in node.body:
                visit(child, True)
            for child in node.handlers + node.orelse + node.finalbody:
                visit(child, optional)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if node.module and node.level == 0 else [])
            for m in mods:
                top = m.split(".")[0]
                if top != "aimc" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add("optional" if optional else "required")
        for child in ast.iter_child_nodes(node):
            visit(child, optional)

    for path in SRC.rglob("*.py"):
        visit(ast.parse(path.read_text(), str(path)), False)
    return found


def test_every_imported_package_is_declared():
    deps = {_req_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = {_req_name(r) for reqs in PYPROJECT["project"]["optional-dependencies"].values() for r in reqs}
    imports = third_party_imports()
    assert {"torch", "numpy", "scipy", "pandas"} <= set(imports)  # the scan sees the package
    assert "optional" in imports["ray"] and "optional" in imports["pyarrow"]
    missing = []
    for mod, kinds in sorted(imports.items()):
        dist = DIST.get(mod, mod).lower()
        if "optional" not in kinds and dist not in deps:
            missing.append(f"{mod} ({dist}) is imported unconditionally but is not in [project].dependencies")
        elif dist not in deps and dist not in extras:
            missing.append(f"{mod} ({dist}) is imported (optionally) but declared nowhere")
    assert not missing, "\n".join(missing)


def test_ray_is_only_imported_through_its_helper():
    """`ray` is an extra: only the backend's import_ray() may import it at top level, never a module."""
    assert third_party_imports().get("ray") is not None
    for path in SRC.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in ("ray", "pyarrow") for n in names), path


def test_torch_range_is_not_pinned_to_one_release():
    """pyproject declares the range the code supports; constraints.txt pins the one CI and the README use."""
    (torch_req,) = [r for r in PYPROJECT["project"]["dependencies"] if _req_name(r) == "torch"]
    lower = re.search(r">=\s*([0-9.]+)", torch_req)
    assert lower, torch_req
    assert "<" not in torch_req and "==" not in torch_req, torch_req  # not capped at the tested release
    # torch.compiler.is_compiling (aimc.nn.layers) exists from torch 2.3, the first release built for NumPy 2
    assert tuple(int(x) for x in lower.group(1).split(".")[:2]) >= (2, 3)
    import torch

    major_minor = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    assert major_minor >= tuple(int(x) for x in lower.group(1).split(".")[:2])
    pins = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", pins, flags=re.M)


def _fresh(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_subpackages_as_attributes_after_plain_import():
    out = _fresh(
        "import sys, aimc\n"
        "before = sorted(m for m in ('aimc.models', 'aimc.data', 'aimc.cost', 'aimc.experiment', 'aimc.cli', "
        "'aimc.report') if m in sys.modules)\n"
        "print('before', before)\n"
        "m = aimc.models.resnet32_cifar()\n"
        "print('model', type(m).__name__, sum(p.numel() for p in m.parameters()))\n"
        "print('data', aimc.data.digits.__name__, 'cost', aimc.cost.estimate.__name__)\n"
        "print('report', aimc.report.render_report.__name__)\n"
        "print('dir', 'models' in dir(aimc) and 'cost' in dir(aimc))\n")
    assert "before []" in out  # nothing heavy imported by `import aimc`
    assert "model ResNetCifar" in out
    assert "data digits cost estimate" in out
    assert "report render_report" in out
    assert "dir True" in out


def test_every_lazy_name_resolves_and_unknown_names_raise():
    import aimc

    for name in aimc._LAZY_SUBMODULES:
        assert getattr(aimc, name).__name__ == f"aimc.{name}"
    with pytest.raises(AttributeError, match="has no attribute 'modelz'"):
        aimc.modelz  # noqa: B018
