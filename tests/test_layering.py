"""The architecture, held by a test: imports flow one way between the layers and between the
subpackages of capsearch, no private name crosses a module, and no two modules import each other.

    common <- traces, profiles <- sim <- real <- capsearch
    capsearch: errors <- capacity <- load, experiments <- plan <- report <- api <- cli

Every import counts, those inside functions too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "traces", "profiles", "sim", "real", "capsearch", "api")

# top-level folder -> the folders it may import from
LAYERS = {
    "common": set(),
    "traces": {"common"},
    "profiles": {"common"},
    "sim": {"common", "traces", "profiles"},
    "real": {"common", "traces", "profiles", "sim"},
    "capsearch": {"common", "traces", "profiles", "sim", "real"},
    "api": {"common", "traces", "profiles", "sim", "real", "capsearch"},  # capsim itself: the API's names
}
# subpackage (or module) of capsearch -> those it may import from
CAPSEARCH = {
    "errors": set(),
    "capacity": {"errors"},
    "load": {"errors", "capacity"},
    "experiments": {"errors", "capacity", "load"},
    "plan": {"errors", "capacity", "experiments"},
    "report": {"errors", "capacity", "load", "experiments", "plan"},
    "api": {"errors", "capacity", "load", "experiments", "plan", "report"},
    "cli": {"errors", "capacity", "load", "experiments", "plan", "report", "api"},
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            name = "capsim." + ".".join(parts)
            found[name.replace("capsim.api", "capsim", 1) if package == "api" else name] = path  # api/ is capsim
    return found


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every capsim import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("capsim."):
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names if alias.name.startswith("capsim.")]
    return found


def test_imports_follow_the_layers():
    wrong = []
    for module, path in modules().items():
        layer = path.relative_to(ROOT).parts[0]  # the folder: capsim itself is api/
        for line, target, _ in imports(path):
            target_layer = target.split(".")[1]
            if target_layer != layer and target_layer not in LAYERS[layer]:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {target}")
            if layer == target_layer == "capsearch" and module != "capsim.capsearch" and target != "capsim.capsearch":
                part, target_part = module.split(".")[2], target.split(".")[2]
                if part != target_part and target_part not in CAPSEARCH[part]:
                    wrong.append(f"{path.relative_to(ROOT)}:{line}: capsearch.{part} imports {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_every_capsearch_part_has_a_place_in_the_layering():
    parts = {
        path.stem if path.is_file() else path.name
        for path in (ROOT / "capsearch").iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").is_file()
    }
    assert parts == set(CAPSEARCH)


def test_no_private_name_crosses_a_module():
    known = modules()
    wrong = []
    for path in known.values():
        tree = ast.parse(path.read_text())
        imported_modules = {}
        for line, target, names in imports(path):
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    wrong.append(f"{path.relative_to(ROOT)}:{line}: imports {target}.{name}")
                if f"{target}.{name}" in known:
                    imported_modules[name] = target
        for node in ast.walk(tree):  # module.private_name, on a module imported by name
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in imported_modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: uses {node.value.id}.{node.attr}")
    assert not wrong, "private names used outside their module:\n" + "\n".join(wrong)


def test_no_two_modules_import_each_other():
    graph = {module: {target for _, target, _ in imports(path)} for module, path in modules().items()}
    cycles = sorted(
        {tuple(sorted((a, b))) for a, targets in graph.items() for b in targets if a != b and a in graph.get(b, ())}
    )
    assert not cycles, f"modules that import each other: {cycles}"


def test_ruff_finds_nothing():
    """The linter and formatter, as pyproject configures them (pyflakes, pycodestyle, isort, bugbear,
    complexity at most 15, lines of 120)."""
    for command in (["check", "."], ["format", "--check", "."]):
        done = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, f"ruff {' '.join(command)}:\n{done.stdout}{done.stderr}"


def test_every_module_imports():
    """A name moved or renamed fails here, not in the one command that imports it lazily."""
    import importlib

    scripts = {"capsim.capsearch.cli.__main__", "capsim.real.vllm_cpu_main"}  # they run on import
    for module in sorted(set(modules()) - scripts):
        importlib.import_module(module)
