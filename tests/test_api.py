"""The public API: every exported name resolves, the top level stays light, and the doctests run.

The top-level namespace holds the core of chapters 1–3 only; optional parts (plots, widgets, attacks, which need
matplotlib, ipywidgets or torchattacks) are imported by name, so ``import deqlib`` must not pull them in.
"""

import doctest
import importlib
import pkgutil
import subprocess
import sys

import pytest

import deqlib

SHARED_PRIVATE_MODULES = ("_validate", "_io", "_modules")

PACKAGES_WITH_ALL = [
    "deqlib",
    "deqlib.solvers",
    "deqlib.train",
    "deqlib.attacks",
    "deqlib.evaluate",
    "deqlib.defenses",
    "deqlib.viz",
    "deqlib.threat",
    "deqlib.losses",
    "deqlib.dynamics",
]


def _all_modules():
    names = ["deqlib"]
    for info in pkgutil.walk_packages(deqlib.__path__, prefix="deqlib."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("module_name", PACKAGES_WITH_ALL)
def test_every_exported_name_resolves(module_name):
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert exported, f"{module_name} has no __all__"
    assert len(set(exported)) == len(exported), f"{module_name}.__all__ lists a name twice"
    missing = [name for name in exported if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ names that do not resolve: {missing}"
    private = [name for name in exported if name.startswith("_")]
    assert not private, f"{module_name} exports private names: {private}"


def test_import_deqlib_stays_light():
    code = (
        "import sys, deqlib; "
        "print(sorted(m for m in ('torchattacks', 'matplotlib', 'ipywidgets', 'deqlib.attacks', 'deqlib.viz') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_no_module_imports_private_names_of_another():
    """``from .x import _y`` across modules couples them through what is not their API (the shared private
    modules ``_validate``, ``_io`` and ``_modules`` are imported by name, never their private names)."""
    import ast
    from pathlib import Path

    offenders = []
    for path in Path(deqlib.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("deqlib")):
                for alias in node.names:
                    if alias.name.startswith("_") and alias.name not in SHARED_PRIVATE_MODULES:
                        offenders.append(f"{path.name}: from {'.' * node.level}{node.module} import {alias.name}")
    assert not offenders, offenders


@pytest.mark.parametrize("module_name", _all_modules())
def test_doctests(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, module_name) if t.examples]
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert deqlib.config._mode_override is None, f"a doctest of {module_name} left a mode override behind"
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {module_name}"


def test_the_doctests_are_many():
    """Guard against the doctest collection silently finding nothing (e.g. a finder that skips re-exports)."""
    total = 0
    for name in _all_modules():
        module = importlib.import_module(name)
        total += sum(len(t.examples) for t in doctest.DocTestFinder().find(module, name))
    assert total >= 60, total


MAX_MODULE_LINES = 420  # "about 400"
MAX_FUNCTION_LINES = 60
SIZE_REASON = "# size:"  # the marker of a reason written beside a long function or module


def _long_functions(path):
    import ast

    lines = path.read_text(encoding="utf-8").splitlines()
    tree = ast.parse("\n".join(lines))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            length = node.end_lineno - first + 1
            context = lines[max(first - 2, 0) : node.body[0].lineno]
            if length > MAX_FUNCTION_LINES and not any(SIZE_REASON in line for line in context):
                out.append(f"{path.name}:{node.lineno} {node.name} ({length} lines)")
    return out


def test_modules_and_functions_stay_small():
    """Small modules with one job: no module over ~400 lines, no function over 60, unless a reason is written beside
    it (a ``# size: ...`` comment on the line above the ``def``, its signature, or the module's first lines)."""
    from pathlib import Path

    too_long = []
    for path in sorted(Path(deqlib.__file__).parent.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        if n > MAX_MODULE_LINES and SIZE_REASON not in "\n".join(text.splitlines()[:40]):
            too_long.append(f"{path.relative_to(Path(deqlib.__file__).parent)} ({n} lines)")
        too_long += _long_functions(path)
    assert not too_long, too_long
