"""A fresh clone of the repository, with nothing beside it, runs: every shipped recipe validates there and the fast
tier passes there. A recipe or a fast test that reads a file outside the committed tree (../shared, a local file
never committed) passes in a working checkout and fails only for whoever clones it; this catches it here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV, ROOT, SMOLLM2

pytestmark = pytest.mark.slow


def _clone(tmp_path: Path) -> Path:
    """`git clone --local` of ROOT's committed HEAD into tmp_path (outside the tree: no ../shared beside it), with
    models/ as a symlink to this checkout's: the default model is gitignored (`make model` writes it, too slow to
    repeat per test) and every recipe names models/SmolLM2-135M-Instruct, which validate checks offline."""
    clone = tmp_path / "clone"
    done = subprocess.run(
        ["git", "clone", "--quiet", "--local", str(ROOT), str(clone)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert not (clone.parent / "shared").exists()
    (clone / "models").symlink_to(ROOT / "models", target_is_directory=True)
    return clone


@pytest.mark.skipif(not SMOLLM2.is_dir(), reason="needs the default model (make model)")
def test_a_clone_alone_validates_every_recipe_and_passes_the_fast_tier(tmp_path):
    """In the clone (committed files only: commit first), with HF_HUB_OFFLINE=1 and PYTHONPATH set to it, since it
    is not installed and the clone's own llm_tune must be the one imported: `python -m llm_tune validate` on every
    shipped recipe, then `python -m pytest -q -m fast tests` as `make test-fast` runs it. The one thing taken from
    this checkout is the models/ symlink (see _clone)."""
    clone = _clone(tmp_path)
    # the outer pytest's own variables (an xdist worker's id, PYTEST_ADDOPTS) are not the inner run's
    env = {k: v for k, v in ENV.items() if not k.startswith("PYTEST_")}
    env |= {"PYTHONPATH": str(clone), "OMP_NUM_THREADS": "1"}

    def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args], cwd=clone, env=env, capture_output=True, text=True, timeout=timeout
        )

    imported = run("-c", "import llm_tune; print(llm_tune.__file__)").stdout.strip()
    assert Path(imported).resolve().is_relative_to(clone.resolve()), f"the clone imported {imported}, not its own"

    recipes = sorted(p.relative_to(clone) for p in (clone / "recipes").rglob("*.yaml") if "accelerate" not in p.parts)
    assert len(recipes) >= 8, recipes
    failed = {}
    for recipe in recipes:
        done = run("-m", "llm_tune", "validate", str(recipe))
        if done.returncode != 0:
            failed[str(recipe)] = f"exit {done.returncode}: {done.stderr.strip()}"
    assert not failed, "recipes that do not validate in a clone alone:\n" + "\n".join(
        f"{k}: {v}" for k, v in failed.items()
    )

    # its own --basetemp: a default one would be a new numbered folder beside the outer run's, which pytest rotates
    fast = run("-m", "pytest", "-q", "-m", "fast", f"--basetemp={tmp_path / 'fast-tier'}", "tests", timeout=1200)
    assert fast.returncode == 0, (
        f"the fast tier in a clone exited {fast.returncode}:\n{fast.stdout[-6000:]}\n{fast.stderr}"
    )
