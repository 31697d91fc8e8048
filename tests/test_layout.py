"""The package's layout rules: the loss library (vsl_ext, outside vsl_ext.harness) never imports the
training harness, ``import vsl_ext`` loads no harness module, and no two modules import each other
in a cycle."""
import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, Set

PACKAGE = Path(__file__).resolve().parents[1] / "vsl_ext"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> Set[str]:
    """The vsl_ext modules a source file imports (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "vsl_ext" or m.startswith("vsl_ext.")}


def _graph(top_level_only: bool) -> Dict[str, Set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path, top_level_only) if m in modules and m != name}
            for name, path in modules.items()}


def test_library_never_imports_the_harness():
    offenders = {name: sorted(m for m in deps if m.startswith("vsl_ext.harness"))
                 for name, deps in _graph(top_level_only=False).items()
                 if not name.startswith("vsl_ext.harness")}
    shims = {"vsl_ext.train"}  # `python -m vsl_ext.train` forwards to the harness's CLI
    assert {k: v for k, v in offenders.items() if v and k not in shims} == {}


def test_import_vsl_ext_loads_no_harness_module():
    code = "import json, sys, vsl_ext; print(json.dumps(sorted(m for m in sys.modules if m.startswith('vsl_ext'))))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "vsl_ext.caption_index" in loaded  # the probe sees the library's modules
    assert [m for m in loaded if m.startswith("vsl_ext.harness")] == []


def test_no_import_cycle_between_modules():
    """Module-level imports form no cycle (a package's __init__ importing its submodules, which
    import names from that package's other submodules, is not a cycle of files)."""
    graph = _graph(top_level_only=True)
    state: Dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, ()):
            if dep.startswith(node + "."):
                continue  # a package importing its own submodule
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    # a submodule importing its parent package's __init__ (to reach a sibling) closes no real cycle
    real = [c for c in cycles if not any(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(c, c[1:]))]
    assert real == []
