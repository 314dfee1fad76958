"""The package's layering, checked over the import graph (function-level imports included).

docs/design.md draws the layers: config / console / label_map / backend / visualize at the
bottom, then ops -> layers -> models -> data -> {training, evaluation, export} -> {finetune,
pretrained} -> tools (the shared command-line pieces and python -m commands) -> the other
commands (predict, train.py, eval.py, export/*.py). A module may import its own package and
anything below it, never above it and never a sibling of the same tier.
"""

from __future__ import annotations

import ast
import glob
import os
import re

import pytest

from tests.support import REPO

TIERS = {
    "tf_rcnn.backend": 0,
    "tf_rcnn.config": 0,
    "tf_rcnn.console": 0,
    "tf_rcnn.label_map": 0,
    "tf_rcnn.visualize": 0,
    "tf_rcnn.formats": 0,  # NumPy-only readers of other frameworks' files
    "tf_rcnn.pretrained.synthetic": 0,  # NumPy-only, loadable by file path
    "tf_rcnn.ops": 1,
    "tf_rcnn.layers": 2,
    "tf_rcnn.models": 3,
    "tf_rcnn.data": 4,
    "tf_rcnn.training": 5,
    "tf_rcnn.evaluation": 5,
    "tf_rcnn.export": 5,
    "tf_rcnn.finetune": 6,
    "tf_rcnn.pretrained": 6,
    "tf_rcnn.tools": 7,
    "tf_rcnn.predict": 8,  # a command (python -m tf_rcnn.predict)
}
SCRIPT_TIER = 8  # train.py, eval.py, export/*.py


def _unit(module: str) -> str | None:
    """The layered unit (package or top-level module) a dotted module name belongs to."""
    for name in sorted(TIERS, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    return None


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _sources() -> list[tuple[str, str]]:
    files = glob.glob(os.path.join(REPO, "tf_rcnn", "**", "*.py"), recursive=True)
    files += [os.path.join(REPO, name) for name in ("train.py", "eval.py")]
    files += glob.glob(os.path.join(REPO, "export", "*.py"))
    return [(path, _module_name(path)) for path in sorted(files)]


def _imports(path: str) -> list[tuple[int, str, bool]]:
    """``(line, imported module, inside a function)`` for every import of a file."""
    with open(path) as f:
        tree = ast.parse(f.read())
    nested = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nested.update(id(sub) for sub in ast.walk(node) if sub is not node)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from tf_rcnn.ops import boxes" imports tf_rcnn.ops.boxes.
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(node.lineno, name, id(node) in nested) for name in names]
    return found


def test_every_tf_rcnn_module_has_a_tier():
    for _, module in _sources():
        if module.startswith("tf_rcnn.") and module != "tf_rcnn":
            assert _unit(module) is not None, f"{module} is not in the layer table"


def test_imports_point_down_and_never_to_a_sibling_of_the_same_tier():
    upward = []
    for path, module in _sources():
        if module == "tf_rcnn":
            continue  # the package root re-exports the detector classes
        source = _unit(module)
        tier = TIERS[source] if source else SCRIPT_TIER
        for line, name, _ in _imports(path):
            target = _unit(name)
            if target is None or target == source:
                continue
            if TIERS[target] >= tier:
                upward.append(f"{module}:{line} imports {name} (tier {TIERS[target]} >= {tier})")
    assert not upward, "\n".join(upward)


def test_function_level_imports_say_why():
    # Only for an optional dependency or start-up order, with a comment saying which.
    unexplained = []
    for path, module in _sources():
        with open(path) as f:
            lines = f.read().split("\n")
        for line, _, nested in _imports(path):
            text = lines[line - 1]
            if nested and not re.search(r"#.*(optional|start-up)", text):
                unexplained.append(f"{module}:{line}: {text.strip()}")
    assert not unexplained, "\n".join(unexplained)


@pytest.mark.parametrize("pattern", [
    r"model\.type\s*[!=]=",          # config.model.type == "..."
    r"\.type\s+in\s+\(",             # m.type in ("mask_rcnn", ...)
    r"[\"'](faster_rcnn|fast_rcnn|mask_rcnn|rfcn)[\"']\s*(==|!=|in\b)",
])
def test_no_model_type_comparison_outside_the_builder(pattern):
    # Code outside the builder asks the family (needs_masks, needs_proposals, needs_rpn).
    offenders = []
    for path, module in _sources():
        if module == "tf_rcnn.models.builder":
            continue
        with open(path) as f:
            lines = f.read().split("\n")
        for number, text in enumerate(lines, 1):
            if re.search(pattern, text.split("#")[0]):
                offenders.append(f"{module}:{number}: {text.strip()}")
    assert not offenders, "\n".join(offenders)


def test_no_reference_to_a_design_document_outside_the_repository():
    files = [p for p, _ in _sources()] + glob.glob(os.path.join(REPO, "**", "*.md"),
                                                   recursive=True)
    files += glob.glob(os.path.join(REPO, "tests", "**", "*.py"), recursive=True)
    files += glob.glob(os.path.join(REPO, "benchmarks", "**", "*.py"), recursive=True)
    files += glob.glob(os.path.join(REPO, "configs", "*.py"))
    offenders = []
    for path in files:
        if ".venv" in path or path.endswith("test_architecture.py"):
            continue
        with open(path) as f:
            if "DESIGN.md" in f.read():
                offenders.append(os.path.relpath(path, REPO))
    assert not offenders, offenders
