"""Recipes through `llm_tune.cli.main(['validate', ...])` in-process (the fast tier): shipped recipes, inheritance,
overrides, golden errors. One subprocess remains: the check that validate imports no torch needs a fresh process."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import ROOT, base_recipe, call_cli, write_recipe

pytestmark = pytest.mark.fast

SHIPPED = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "accelerate" not in p.parts)


def test_the_shipped_recipes_are_the_documented_set():
    names = {p.name for p in SHIPPED}
    assert {
        "instruct-lora.yaml",
        "instruct-qlora.yaml",
        "instruct-full.yaml",
        "instruct-frozen.yaml",
        "chat-lora.yaml",
        "sentiment.yaml",
        "multilabel.yaml",
        "regression.yaml",
    } <= names


@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_recipe_validates_and_opens_with_how_to_run_it(recipe: Path):
    assert recipe.read_text().startswith("#"), "a recipe opens with a comment saying what it does and how to run it"
    assert "Run:" in recipe.read_text()
    done = call_cli("validate", recipe.relative_to(ROOT))
    for resolved in yaml.safe_load_all(done.stdout):  # a chained recipe prints every stage
        assert resolved["model"]["name_or_path"] == "models/SmolLM2-135M-Instruct"
        assert "inherits" not in resolved


def test_validate_resolves_inheritance_and_overrides(tmp_path):
    done = call_cli(
        "validate", "recipes/instruct-qlora.yaml", "training.learning_rate=1e-4", "strategy.r=8", "data.max_length=64"
    )
    resolved = yaml.safe_load(done.stdout)
    assert resolved["strategy"]["kind"] == "qlora"  # from the child
    assert resolved["data"]["format"] == "alpaca"  # from the parent
    assert resolved["training"]["learning_rate"] == 1e-4
    assert resolved["strategy"]["r"] == 8 and resolved["data"]["max_length"] == 64


def test_strategy_kind_override_needs_nothing_else():
    for kind in ("full", "frozen", "lora", "qlora"):
        resolved = yaml.safe_load(call_cli("validate", "recipes/instruct-lora.yaml", f"strategy.kind={kind}").stdout)
        assert resolved["strategy"]["kind"] == kind


def _errors(tmp_path: Path, recipe: dict, *overrides: str) -> list[str]:
    path = write_recipe(tmp_path / "bad.yaml", recipe)
    done = call_cli("validate", path, *overrides, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return [line.replace(str(path), "bad.yaml") for line in done.stderr.splitlines()]


@pytest.fixture
def good(tiny_model, data_dir, tmp_path) -> dict:
    return base_recipe(tiny_model, data_dir, tmp_path / "run")


def test_golden_errors_for_bad_recipes(tmp_path, good):
    assert _errors(tmp_path, good, "training.lerning_rate=1e-4") == [
        "error: bad.yaml: training.lerning_rate: unknown key (did you mean 'learning_rate'?)"
    ]
    assert _errors(tmp_path, good, "training.max_steps=ten") == [
        "error: bad.yaml: training.max_steps: Input should be a valid integer, unable to parse string as an integer"
        " (got 'ten')"
    ]
    assert _errors(tmp_path, good, "training.learning_rate=-1") == [
        "error: bad.yaml: training.learning_rate: Input should be greater than 0 (got -1)"
    ]
    assert _errors(tmp_path, good, "strategy.kind=lorra") == [
        "error: bad.yaml: strategy.kind: Input should be 'full', 'frozen', 'lora' or 'qlora' (got 'lorra')"
    ]
    assert _errors(tmp_path, good, "data.train=missing.jsonl") == [
        "error: bad.yaml: data.train: file not found: missing.jsonl"
    ]


def test_every_problem_is_reported_at_once(tmp_path, good):
    lines = _errors(tmp_path, good, "modle.name=x", "data.formt=chat", "training.seed=abc")
    assert len(lines) == 3
    assert any("modle: unknown key (did you mean 'model'?)" in line for line in lines)
    assert any("data.formt: unknown key (did you mean 'format'?)" in line for line in lines)
    assert any("training.seed:" in line for line in lines)


def test_cross_field_rules_run_before_any_model_loads(tmp_path, good):
    lines = _errors(tmp_path, good, "strategy.kind=frozen", "strategy.trainable_layers=5")
    assert lines == ["error: bad.yaml: strategy.trainable_layers: 5, but the model has 2 blocks; choose 1 to 2"]
    lines = _errors(tmp_path, good, "task=classification")
    assert lines == [
        "error: bad.yaml: data.format: task classification needs data.format classification, multi_label or"
        " regression, not alpaca"
    ]
    good["model"]["name_or_path"] = str(tmp_path / "no-such-model")
    assert _errors(tmp_path, good) == [
        f"error: bad.yaml: model.name_or_path: {tmp_path / 'no-such-model'} does not exist"
    ]


def test_bad_yaml_and_missing_recipe_are_one_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    done = call_cli("validate", broken, check=False)
    assert done.returncode == 2 and done.stderr.startswith(f"error: {broken}: not valid YAML (line")
    done = call_cli("validate", tmp_path / "nope.yaml", check=False)
    assert (done.returncode, done.stderr.strip()) == (2, f"error: {tmp_path / 'nope.yaml'}: recipe file not found")
    done = call_cli("validate", "recipes/instruct-lora.yaml", "training.learning_rate", check=False)
    assert done.returncode == 2 and "expected key.path=value" in done.stderr


def test_train_with_a_bad_recipe_writes_nothing(tmp_path, good):
    path = write_recipe(tmp_path / "bad.yaml", good)
    done = call_cli(path, "training.lerning_rate=1", check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_validate_imports_no_torch(tmp_path):
    import subprocess
    import sys

    code = "import sys; from llm_tune.cli import main\ntry: main(['validate', 'recipes/instruct-lora.yaml'])\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip().endswith("False"), done.stdout + done.stderr


def test_a_strategy_key_of_another_kind_is_an_error_naming_its_kind(tmp_path, good):
    good["strategy"] = {"kind": "frozen", "r": 64}
    assert _errors(tmp_path, good) == [
        "error: bad.yaml: strategy.r: a key of strategy kind lora or qlora, not of kind frozen"
        " (which takes: trainable_layers, trainable_modules, unfreeze_every_steps)"
    ]
    good["strategy"] = {"kind": "lora", "trainable_layers": 2, "rr": 3}
    lines = sorted(_errors(tmp_path, good))
    assert lines[0] == "error: bad.yaml: strategy.rr: unknown key (did you mean 'r'?)"
    assert lines[1].startswith(
        "error: bad.yaml: strategy.trainable_layers: a key of strategy kind frozen, not of kind lora"
    )


def test_changing_the_kind_keeps_only_the_keys_of_the_new_kind(tmp_path):
    # instruct-frozen inherits instruct-lora: none of the LoRA keys follow it.
    frozen = yaml.safe_load(call_cli("validate", "recipes/instruct-frozen.yaml").stdout)["strategy"]
    assert frozen == {
        "kind": "frozen",
        "trainable_layers": 4,
        "trainable_modules": ["norm"],
        "unfreeze_every_steps": None,
    }
    # On the command line too, whatever the order of the overrides; qlora keeps LoRA's keys.
    done = call_cli("validate", "recipes/instruct-lora.yaml", "strategy.trainable_layers=3", "strategy.kind=frozen")
    assert yaml.safe_load(done.stdout)["strategy"]["trainable_layers"] == 3
    done = call_cli("validate", "recipes/instruct-lora.yaml", "strategy.kind=qlora", "strategy.r=4")
    strategy = yaml.safe_load(done.stdout)["strategy"]
    assert (strategy["kind"], strategy["r"], strategy["bnb_4bit_quant_type"]) == ("qlora", 4, "nf4")
    # A key of the old kind given with the switch is still an error.
    done = call_cli("validate", "recipes/instruct-lora.yaml", "strategy.kind=frozen", "strategy.r=4", check=False)
    assert done.returncode == 2 and "strategy.r: a key of strategy kind lora or qlora" in done.stderr


def test_keys_prints_every_key_from_the_schema():
    from llm_tune.recipe.schema import STRATEGIES, Recipe

    done = call_cli("keys")
    paths = {line.split()[0] for line in done.stdout.splitlines()}
    for section in ("model", "data", "training", "classification", "export"):
        fields = Recipe.model_fields[section].annotation
        fields = next(a for a in (getattr(fields, "__args__", None) or (fields,)) if hasattr(a, "model_fields"))
        for name, info in fields.model_fields.items():
            assert info.description, f"{section}.{name} has no description"
            if not hasattr(info.annotation, "model_fields"):
                assert f"{section}.{name}" in paths
    strategy = call_cli("keys", "strategy").stdout
    for cls in STRATEGIES.values():
        for name, info in cls.model_fields.items():
            assert info.description and f"strategy.{name} " in strategy
    assert "[lora, qlora] adapter rank" in strategy and "[frozen] how many final" in strategy
    done = call_cli("keys", "nope", check=False)
    assert done.returncode == 2 and "sections: model, strategy" in done.stderr
