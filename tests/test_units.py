"""Unit tests of pure functions (no model, no process): classification scores, recipe differences and predicates,
checkpoint completeness, sweep spaces and rankings, the optional extras. Part of the fast tier."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from llm_tune.errors import UserError

pytestmark = pytest.mark.fast


def _recipe(**changes):
    from llm_tune.recipe.schema import Recipe

    raw = {"model": {"name_or_path": "m"}, "data": {"train": "t.jsonl"}}
    for key, value in changes.items():
        section, _, leaf = key.rpartition(".")
        (raw.setdefault(section, {}) if section else raw)[leaf] = value
    return Recipe.model_validate(raw)


# classification scores


def test_scores_match_a_hand_computed_example():
    from llm_tune.classification.metrics import label_scores

    # truth:     a a a b b c      predicted: a b a b c c
    scores = label_scores([0, 1, 0, 1, 2, 2], [0, 0, 0, 1, 1, 2], 3)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    # per class: a: p=2/2, r=2/3; b: p=1/2, r=1/2; c: p=1/2, r=1/1
    assert scores["precision"] == pytest.approx([1.0, 0.5, 0.5])
    assert scores["recall"] == pytest.approx([2 / 3, 0.5, 1.0])
    f1 = [2 * p * r / (p + r) for p, r in zip([1.0, 0.5, 0.5], [2 / 3, 0.5, 1.0])]
    assert scores["f1"] == pytest.approx(f1)
    assert scores["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert scores["support"] == [3, 2, 1]
    assert scores["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    json.dumps(scores)  # metrics.json takes them as they are


def test_a_class_never_predicted_or_never_present_scores_zero():
    from llm_tune.classification.metrics import label_scores

    scores = label_scores([0, 0, 1], [0, 1, 1], 3)  # label 2: neither true nor predicted; 0/0 is 0, never NaN
    assert scores["precision"][2] == scores["recall"][2] == scores["f1"][2] == 0.0
    assert scores["macro_f1"] == pytest.approx((2 * 1 / 3 + 2 * 1 / 3 + 0) / 3)
    assert label_scores([], [], 2)["accuracy"] == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_scores_agree_with_scikit_learn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    from llm_tune.classification.metrics import label_scores

    rng = random.Random(seed)
    labels = rng.randint(2, 6)
    truth = [rng.randrange(labels - 1) for _ in range(50)]  # the last label never true: the zero_division case
    predicted = [rng.randrange(labels) for _ in range(50)]
    ids = list(range(labels))
    ours = label_scores(predicted, truth, labels)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(truth, predicted, labels=ids,
                                                                             zero_division=0)  # fmt: skip
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(truth, predicted))
    assert ours["macro_f1"] == pytest.approx(metrics.f1_score(truth, predicted, labels=ids, average="macro",
                                                              zero_division=0))  # fmt: skip
    assert ours["precision"] == pytest.approx(precision.tolist()) and ours["recall"] == pytest.approx(recall.tolist())
    assert ours["f1"] == pytest.approx(f1.tolist()) and ours["support"] == support.tolist()
    assert ours["confusion_matrix"] == metrics.confusion_matrix(truth, predicted, labels=ids).tolist()


# recipes


def test_the_classification_predicates():
    sft = _recipe()
    labelled_sft = _recipe(**{"data.format": "classification"})
    classifier = _recipe(task="classification", **{"data.format": "classification"})
    assert (sft.is_classification, sft.reads_labels, sft.data.labelled) == (False, False, False)
    assert (labelled_sft.is_classification, labelled_sft.reads_labels) == (False, True)
    assert (classifier.is_classification, classifier.reads_labels, classifier.sequence_head) == (True, True, False)
    assert _recipe(task="classification", **{"classification.head": "sequence"}).sequence_head


def test_recipe_differences_name_each_key_once_with_every_value():
    from llm_tune.recipe.diff import differences, differing

    a, b = _recipe(), _recipe(**{"training.learning_rate": 1e-3, "output_dir": "x"})
    c = _recipe(**{"training.learning_rate": 1e-3, "strategy.r": 8})
    assert differences(a, b) == {"output_dir": ("runs/latest", "x"), "training.learning_rate": (2e-4, 1e-3)}
    found = differing([a, b, c], ignore=frozenset({"output_dir"}))
    assert found == {"strategy.r": [16, 16, 8], "training.learning_rate": [2e-4, 1e-3, 1e-3]}
    assert differing([a, a]) == {}


# run folders and checkpoints


def test_only_complete_checkpoints_count_and_the_highest_step_wins(tmp_path):
    from llm_tune.run_folder import RunFolder, checkpoint_folders, is_complete
    from llm_tune.train.checkpoints import mark_complete

    run = RunFolder(tmp_path / "run")
    assert run.latest_checkpoint() is None and checkpoint_folders(run.checkpoints) == []
    for step in (2, 10, 4):
        folder = run.checkpoints / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "weights.bin").write_bytes(b"x" * step)
        mark_complete(folder, step)
    (run.checkpoints / "checkpoint-20").mkdir()  # cut off before its marker
    (run.checkpoints / "checkpoint-x").mkdir()  # not the Trainer's name
    assert [p.name for p in checkpoint_folders(run.checkpoints)] == [f"checkpoint-{s}" for s in (2, 4, 10, 20)]
    assert run.latest_checkpoint().name == "checkpoint-10"
    (run.checkpoints / "checkpoint-10" / "weights.bin").write_bytes(b"x")  # truncated after the marker
    assert not is_complete(run.checkpoints / "checkpoint-10")
    assert run.latest_checkpoint().name == "checkpoint-4"


# sweeps


def test_vary_specs_parse_into_values_and_ranges():
    from llm_tune.sweep.space import as_overrides, grid, parse_space, parse_vary

    assert parse_vary("training.learning_rate=[1e-4, 2e-4]").values == (1e-4, 2e-4)  # YAML 1.1 reads 1e-4 as text
    ranged = parse_vary("training.learning_rate=loguniform(1e-5, 1e-3)")
    assert (ranged.kind, ranged.low, ranged.high, ranged.endpoints()) == ("loguniform", 1e-5, 1e-3, (1e-5, 1e-3))
    assert parse_vary("strategy.r=int(4,16)").endpoints() == (4, 16)
    space = parse_space(["strategy.r=[4,8]", "training.seed=[1,2,3]"])
    assert grid(space)[:2] == [{"strategy.r": 4, "training.seed": 1}, {"strategy.r": 4, "training.seed": 2}]
    assert len(grid(space)) == 6
    assert as_overrides({"strategy.layers_to_transform": [0, 1], "x": None}) == [
        "strategy.layers_to_transform=[0, 1]",
        "x=null",
    ]


@pytest.mark.parametrize("spec, expect", [
    ("training.seed", "expected key.path=[a,b]"),
    ("training.seed=5", "neither a list of values"),
    ("training.seed=[1,1]", "a value is listed twice"),
    ("training.learning_rate=loguniform(0,1)", "need low < high and low > 0"),
    ("training.learning_rate=normal(0,1)", "unknown range 'normal'"),
    ("training.learning_rate=uniform(a,b)", "the bounds must be numbers"),
])  # fmt: skip
def test_a_bad_vary_spec_is_one_error_naming_it(spec, expect):
    from llm_tune.sweep.space import parse_vary

    with pytest.raises(UserError, match=expect.replace("(", r"\(").replace("[", r"\[")):
        parse_vary(spec)


def test_trials_rank_best_first_and_those_without_a_metric_last():
    from llm_tune.sweep.table import Trial, ranked

    trials = [
        Trial(i, {}, m, None, None, "finished", f"trial-{i}") for i, m in enumerate([0.5, None, 0.9, float("nan")])
    ]
    assert [t.number for t in ranked(trials, greater_is_better=True)] == [2, 0, 1, 3]
    assert [t.number for t in ranked(trials, greater_is_better=False)] == [0, 2, 1, 3]


# optional extras


def test_a_missing_extra_is_one_line_naming_the_pip_command(monkeypatch):
    from llm_tune import extras
    from llm_tune.recipe.checks import missing_extras

    monkeypatch.setattr(extras.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError) as caught:
        extras.require("optuna", "--search random")
    assert caught.value.problems == [
        "--search random needs optuna, which is not installed: pip install 'llm_tune[sweep]'"
    ]
    qlora = _recipe(strategy={"kind": "qlora"}, export={"format": "gguf"})
    assert missing_extras(qlora) == [
        "strategy.kind: qlora needs bitsandbytes, which is not installed: pip install 'llm_tune[qlora]'",
        "export.format: a gguf export needs gguf, which is not installed: pip install 'llm_tune[gguf]'",
    ]
    assert missing_extras(_recipe()) == []


def test_every_extra_named_in_a_message_is_declared_in_pyproject():
    import tomllib

    from llm_tune.extras import EXTRAS

    declared = tomllib.loads(Path(__file__).parents[1].joinpath("pyproject.toml").read_text())["project"]
    extras = declared["optional-dependencies"]
    for module, extra in EXTRAS.items():
        assert any(dep.replace("-", "_").startswith(module) for dep in extras[extra]), (module, extra)
        assert not any(dep.replace("-", "_").startswith(module) for dep in declared["dependencies"]), module


# the doctor's data checks


def test_length_stats_and_the_truncation_warning():
    from llm_tune.doctor.checks import Findings, length_stats, truncation_findings

    stats = length_stats([5, 1, 9, 30, 7], max_length=8)
    assert (stats.rows, stats.min, stats.median, stats.p95, stats.max, stats.truncated) == (5, 1, 7, 30, 30, 2)
    found = Findings()
    truncation_findings({"train": stats}, found)
    assert found.warnings == [
        "train: 2 of 5 rows (40%) are longer than data.max_length=8 and lose their end (the"
        " longest has 30 tokens); raise data.max_length or shorten the rows"
    ]


def test_duplicates_near_duplicates_conflicts_and_leakage_are_counted():
    from dataclasses import asdict

    from llm_tune.doctor.checks import DuplicateCounts, Findings, duplicate_findings

    train = [("Good film.", "pos"), ("Good film.", "pos"), ("GOOD film!", "neg"), ("Dull.", "neg")]
    found = Findings()
    d = duplicate_findings(train, [("dull", "neg"), ("New.", "pos")], found)
    assert d.train == DuplicateCounts(exact_duplicates=1, near_duplicates=1, conflicting_labels=1)
    assert d.validation == DuplicateCounts(0, 0, 0) and d.train_validation_overlap == 1
    assert len(found.warnings) == 3 and found.warnings[2].startswith("data.validation: 1 of 2 rows also appear")
    alone = duplicate_findings(train, None, Findings())
    assert alone.validation is None and alone.train_validation_overlap is None
    assert asdict(alone.train) == {"exact_duplicates": 1, "near_duplicates": 1, "conflicting_labels": 1}


@pytest.mark.fast
def test_the_hub_revision_reaches_from_pretrained(tiny_model, monkeypatch):
    """model.revision and model.trust_remote_code reach transformers' from_pretrained for the tokenizer and the
    model (a local folder has no revisions and no code of its own, so tests/test_keys.py cannot see them act)."""
    import transformers

    from llm_tune.model.loading import load_model, load_tokenizer
    from llm_tune.recipe.schema import ModelConfig

    seen: list[dict] = []
    for auto in ("AutoTokenizer", "AutoModelForCausalLM"):
        cls = getattr(transformers, auto)
        original = cls.from_pretrained.__func__

        def record(klass, *args, _original=original, **kwargs):
            seen.append({k: kwargs.get(k) for k in ("revision", "trust_remote_code")})
            return _original(klass, *args, **{**kwargs, "revision": None, "trust_remote_code": False})

        monkeypatch.setattr(cls, "from_pretrained", classmethod(record))
    cfg = ModelConfig(name_or_path=str(tiny_model), revision="v2", trust_remote_code=True)
    load_model(cfg, load_tokenizer(cfg))
    assert seen == [{"revision": "v2", "trust_remote_code": True}] * 2
