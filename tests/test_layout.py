"""The package's shape: imports between llm_tune's subpackages run one way, function-level imports included, and
the torch-free layers stay torch-free. Read from the source with `ast`, so a new import that closes a cycle fails
here before anyone has to find it."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "llm_tune"
# The layers, bottom first: a unit imports units of lower layers only, never its peers or anything above. `train`
# only trains; the application layer (`pipeline`) reads a run top to bottom and ends it by evaluating, saving,
# reporting, sampling and exporting; sweep and doctor drive the pipeline's steps; the cli dispatches to all.
LAYERS = [
    {"__init__", "errors", "ranks"},
    {"extras"},
    {"console"},
    {"recipe"},
    {"run_folder"},
    {"data", "model"},
    {"classification"},
    {"train", "export", "report", "generation"},
    {"preference"},
    {"tasks"},
    {"pipeline"},
    {"sweep", "doctor"},
    {"cli"},
    {"__main__"},
]
TORCH_FREE = {"errors", "extras", "console", "recipe"}


def unit(path: Path, package: Path = PACKAGE) -> str:
    """The subpackage (or top-level module) a file belongs to."""
    return path.relative_to(package).parts[0].removesuffix(".py")


def imported_units(path: Path, package: Path = PACKAGE) -> set[str]:
    """The units one file imports, wherever the import statement stands."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = path.relative_to(package).with_suffix("").parts
    found = set()
    for node in ast.walk(tree):  # every import, at module level or inside a function
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = list(here[: len(here) - node.level])
                parts = base + (node.module.split(".") if node.module else [n.name for n in node.names][:1])
            elif node.module and node.module.startswith("llm_tune."):
                parts = node.module.split(".")[1:]
            elif node.module == "llm_tune":
                parts = [node.names[0].name]
            else:
                continue
            if parts:
                found.add(parts[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("llm_tune."):
                    found.add(alias.name.split(".")[1])
    # `from llm_tune import __version__` names no module or subpackage: it is the package's __init__
    named = {name if (package / name).is_dir() or (package / f"{name}.py").is_file() else "__init__" for name in found}
    return named - {unit(path, package)}


def third_party(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def layer_of(name: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if name in layer)


def upward_imports(package: Path = PACKAGE) -> list[str]:
    wrong = []
    for path in sorted(package.rglob("*.py")):
        source = unit(path, package)
        for target in imported_units(path, package):
            if layer_of(target) >= layer_of(source):
                wrong.append(f"{path.relative_to(package)}: {source} imports {target}")
    return wrong


def test_every_unit_has_a_layer():
    units = {unit(p) for p in PACKAGE.rglob("*.py")}
    assert units <= set().union(*LAYERS), units - set().union(*LAYERS)


def test_imports_point_down_only():
    wrong = upward_imports()
    assert not wrong, "\n".join(wrong)


def test_the_recipe_layer_imports_no_torch():
    heavy = {"torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes"}
    wrong = {
        str(p.relative_to(ROOT)): sorted(third_party(p) & heavy)
        for p in PACKAGE.rglob("*.py")
        if unit(p) in TORCH_FREE and third_party(p) & heavy
    }
    assert not wrong, wrong


def test_the_checker_sees_an_upward_import_inside_a_function(tmp_path):
    package = tmp_path / "llm_tune"
    (package / "recipe").mkdir(parents=True)
    (package / "recipe" / "loading.py").write_text(
        "from . import schema\n\ndef f():\n    from ..train import pipeline\n"
    )
    (package / "train").mkdir()
    (package / "train" / "pipeline.py").write_text("from llm_tune.recipe import loading\n")
    assert upward_imports(package) == ["recipe/loading.py: recipe imports train"]
