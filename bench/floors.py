"""Print the project's declared dependency floors as exact pins (`name==floor`), one per line, for `make compat`.
The floors live once, in pyproject.toml; this turns `>=X` into `==X`."""

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
extras = project["optional-dependencies"]
requirements = list(project["dependencies"])
for requirement in extras["test"]:  # `llm_tune[a,b]` in the test extra: the extras it names
    named = re.match(r"^llm_tune\[(.*)\]$", requirement)
    requirements += [r for extra in named.group(1).split(",") for r in extras[extra]] if named else [requirement]
for requirement in requirements:
    match = re.match(r"^([A-Za-z0-9_.\-]+)\s*>=\s*([^,\s]+)", requirement)
    if not match:
        sys.exit(f"no floor in {requirement!r}: every dependency declares one")
    print(f"{match.group(1)}=={match.group(2)}")
