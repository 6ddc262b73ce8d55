"""The lean install: every third-party module llm_tune imports is a declared requirement (or one a requirement
itself requires), or belongs to one of the optional extras, which extras.py names so that a missing one is one
error line. scipy once arrived only through the test extra (scikit-learn) and a regression run crashed after
training on `pip install llm_tune`; this test reads the imports with `ast`, so the next one fails here."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata

import pytest
from test_layout import PACKAGE, third_party

from conftest import ROOT

pytestmark = pytest.mark.fast


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _runtime_distributions() -> set[str]:
    """The declared requirements and what they require in turn (their own non-extra requirements)."""
    todo, seen = [_name(r) for r in _project()["dependencies"]], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


def _imported_modules() -> dict[str, str]:
    """Top-level third-party modules imported anywhere in llm_tune/, with one file that imports each."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for module in third_party(path) - stdlib - {"llm_tune"}:
            found.setdefault(module, str(path.relative_to(ROOT)))
    return found


def test_every_imported_module_is_a_requirement_or_an_extra():
    from llm_tune.extras import EXTRAS

    optional = {
        _name(r) for extra, reqs in _project()["optional-dependencies"].items() if extra != "test" for r in reqs
    }
    runtime = _runtime_distributions()
    providers = metadata.packages_distributions()
    wrong = []
    for module, where in _imported_modules().items():
        distributions = {d.lower().replace("_", "-") for d in providers.get(module, [module])}
        if distributions & runtime:
            continue
        if module in EXTRAS and distributions & optional:
            continue  # an extra: extras.py names it, so a missing one is one line naming the pip extra
        wrong.append(f"{where} imports {module} ({', '.join(sorted(distributions))}): not a requirement of llm_tune")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_an_undeclared_module(tmp_path, monkeypatch):
    """scikit-learn (the test extra) is not a requirement: a module importing it is reported."""
    import test_dependencies

    monkeypatch.setattr(test_dependencies, "_imported_modules", lambda: {"sklearn": "llm_tune/x.py"})
    with pytest.raises(AssertionError, match="llm_tune/x.py imports sklearn"):
        test_every_imported_module_is_a_requirement_or_an_extra()
