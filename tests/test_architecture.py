"""The layering rules of ARCHITECTURE.md, checked: no import cycle, project imports at module level only,
every module imports alone, no file past the size limit, no measured figures in the confs."""
import ast
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PACKAGES = ("models", "datasets", "sam_utils", "systems", "evaluation")
MAX_LINES = 400
# optional heavy dependencies may be imported inside functions, each from one module only
LAZY_ALLOWED = {"tinycudann", "triton", "segment_anything", "mobile_sam"}


def modules() -> dict[str, ast.Module]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = ast.parse(path.read_text(), str(path))
    return out


def project_imports(name: str, tree: ast.Module) -> list[tuple[str, bool]]:
    """(imported project module, at module level?) for every import in the module."""
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(name.split(".")[:-node.level] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            if t.split(".")[0] in PACKAGES + tuple(LAZY_ALLOWED):
                found.append((t, id(node) in top))
    return found


def test_no_import_cycles_and_no_project_imports_inside_functions():
    mods = modules()
    graph = {m: set() for m in mods}
    for name, tree in mods.items():
        for target, at_top in project_imports(name, tree):
            root = target.split(".")[0]
            if root in LAZY_ALLOWED:
                continue
            assert at_top, f"{name} imports {target} inside a function"
            if target in mods and target != name:
                graph[name].add(target)
    # depth-first search for a back edge
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(n):] + [n]) if n in path
                            else f"import cycle through {m} -> {n}")
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_optional_heavy_dependencies_are_imported_in_one_module_each():
    where: dict[str, set] = {}
    for name, tree in modules().items():
        for target, at_top in project_imports(name, tree):
            root = target.split(".")[0]
            if root in LAZY_ALLOWED and not at_top:
                where.setdefault(root, set()).add(name)
    assert all(len(m) == 1 for m in where.values()), where


# A fresh interpreter that has loaded only third-party packages forks once per module, so each project
# module is imported alone (no other project module loaded before it) without paying torch's import each time.
FORK_IMPORTS = """
import os, sys, importlib
import numpy, torch, cv2, scipy, trimesh  # third-party only
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
            os._exit(0)
        except BaseException as exc:
            print(name, type(exc).__name__, exc, file=sys.stderr)
            os._exit(1)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
print("FAILED", failed)
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_alone_in_a_fresh_interpreter():
    r = subprocess.run([sys.executable, "-c", FORK_IMPORTS, *sorted(modules())], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def test_no_file_past_the_size_limit():
    files = [p for pkg in PACKAGES + ("tests", "bench", "scripts") for p in (ROOT / pkg).rglob("*.py")]
    files += [ROOT / "train.py"]
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


MEASURED = re.compile(r"\b\d+(\.\d+)?\s*(mm|ms|GB|MB|it/s|s\b)|\b0\.\d{3}\b|\d+(\.\d+)?x\b")


def test_conf_comments_hold_no_measured_figures():
    for conf in sorted((ROOT / "confs").glob("*.conf")):
        for i, line in enumerate(conf.read_text().splitlines(), 1):
            comment = line.split("#", 1)[1] if "#" in line else ""
            assert not MEASURED.search(comment), f"{conf.name}:{i}: {comment.strip()}"
