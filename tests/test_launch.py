"""`doctor RECIPE --launch ACCELERATE_CONFIG`: the recipe x accelerate config x installed versions x hardware
combinations that cannot train as asked are refused before anything loads, one `error:` line each, exit 2; the same
rules judge a GPU machine we do not have (Hardware given), where the shipped configs pass."""

from __future__ import annotations

import pytest

from conftest import ROOT, base_recipe, write_recipe

CONFIGS = ROOT / "recipes" / "accelerate"


def doctor_launch(capsys, recipe, config, *overrides) -> tuple[int, list[str]]:
    """Run `llm_tune doctor RECIPE --launch CONFIG` in this process: (exit code, its `error:` lines)."""
    from llm_tune.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["doctor", str(recipe), *overrides, "--launch", str(config)])
    err = capsys.readouterr().err
    print(err)  # pytest -s shows what a user sees
    return stopped.value.code, [line for line in err.splitlines() if line.startswith("error:")]


def config_file(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text("compute_environment: LOCAL_MACHINE\nnum_machines: 1\nmachine_rank: 0\n" + text)
    return path


@pytest.fixture
def recipe(tmp_path, tiny_model, data_dir):
    return write_recipe(tmp_path / "r.yaml", base_recipe(tiny_model, data_dir, tmp_path / "out"))


def test_fsdp_config_on_this_cpu_machine_says_it_would_be_ddp(capsys, recipe, tmp_path):
    code, errors = doctor_launch(capsys, recipe, CONFIGS / "fsdp.yaml")
    assert code == 2
    assert any(
        "distributed_type FSDP on this machine without GPUs" in e and "would train plain DDP" in e for e in errors
    ), errors
    # model.dtype float32 (no autocast) against the config's bf16: the launcher's autocast would win silently
    assert any("mixed_precision bf16 contradicts model.dtype float32" in e for e in errors), errors
    assert not (tmp_path / "out").exists()  # nothing loaded, nothing written


def test_deepspeed_zero3_config_on_this_cpu_machine(capsys, recipe):
    code, errors = doctor_launch(capsys, recipe, CONFIGS / "deepspeed-zero3.yaml", "model.dtype=bfloat16")
    assert code == 2
    assert errors == [
        f"error: {CONFIGS / 'deepspeed-zero3.yaml'}: distributed_type DEEPSPEED on this machine without"
        " GPUs: DeepSpeed does not train on a CPU through the Trainer (it stops at start); on CPUs use"
        " accelerate launch --config_file recipes/accelerate/cpu-ddp.yaml --num_processes N -m llm_tune"
    ]


def test_zero3_without_gathering_a_sequence_head_is_refused(capsys, tmp_path, tiny_model, data_dir):
    recipe = base_recipe(
        tiny_model,
        data_dir,
        tmp_path / "out",
        task="classification",
        data={"train": str(data_dir / "reviews.jsonl"), "format": "classification"},
    )
    recipe["classification"] = {"head": "sequence"}
    path = write_recipe(tmp_path / "c.yaml", recipe)
    config = config_file(
        tmp_path,
        "z3.yaml",
        "distributed_type: DEEPSPEED\nnum_processes: 2\nmixed_precision: 'no'\n"
        "deepspeed_config:\n  zero_stage: 3\n  zero3_save_16bit_model: false\n",
    )
    code, errors = doctor_launch(capsys, path, config)
    assert code == 2
    assert any("ZeRO-3 without zero3_save_16bit_model" in e and "zero-size tensor, peft#2450" in e for e in errors), (
        errors
    )


def test_qlora_storage_dtype_other_than_the_model_dtype_under_fsdp_is_refused(capsys, tmp_path, tiny_model, data_dir):
    recipe = base_recipe(
        tiny_model,
        data_dir,
        tmp_path / "out",
        strategy={"kind": "qlora", "r": 4, "lora_alpha": 8, "bnb_4bit_compute_dtype": "bfloat16"},
    )
    code, errors = doctor_launch(
        capsys,
        write_recipe(tmp_path / "q.yaml", recipe),
        CONFIGS / "fsdp.yaml",
        "training.gradient_checkpointing=false",
    )
    assert code == 2
    assert any(
        "strategy.bnb_4bit_compute_dtype bfloat16 is the 4-bit weights' storage dtype, but model.dtype float32" in e
        for e in errors
    ), errors


def test_fp16_mixed_precision_is_refused(capsys, recipe, tmp_path):
    config = config_file(
        tmp_path, "fp16.yaml", "distributed_type: MULTI_GPU\nnum_processes: 2\nmixed_precision: fp16\n"
    )
    code, errors = doctor_launch(capsys, recipe, config)
    assert code == 2
    assert len(errors) == 1, errors
    assert "mixed_precision fp16 contradicts model.dtype float32, which trains without autocast (llm_tune" in errors[0]


def test_a_missing_config_file_is_one_line(capsys, recipe, tmp_path):
    code, errors = doctor_launch(capsys, recipe, tmp_path / "nope.yaml")
    assert code == 2
    assert errors == [f"error: --launch: accelerate config file not found: {tmp_path / 'nope.yaml'}"]


# The same rules on a GPU machine we do not have: what an 8-GPU host with accelerate 1.16 / 1.15 would be told.
def findings(recipe_dict, config, gpus=8, accelerate=(1, 16), deepspeed=True):
    from llm_tune.recipe.schema import Recipe
    from llm_tune.train.launch import parse_launch
    from llm_tune.train.launch_checks import Hardware, launch_findings

    launch = parse_launch(["--config_file", str(config), "-m", "llm_tune", "r.yaml"], source=config.name)
    return launch_findings(Recipe.model_validate(recipe_dict), launch, Hardware(gpus, True, accelerate, deepspeed))


def with_dtype(recipe: dict, dtype: str) -> dict:
    recipe["model"]["dtype"] = dtype
    return recipe


def test_the_shipped_gpu_configs_pass_on_an_8_gpu_machine(tmp_path, tiny_model, data_dir):
    lora = with_dtype(base_recipe(tiny_model, data_dir, tmp_path / "out"), "auto")
    for name in ("fsdp", "deepspeed-zero2", "deepspeed-zero3", "deepspeed-zero3-offload", "ddp"):
        assert findings(lora, CONFIGS / f"{name}.yaml") == ([], []), name
    qlora = with_dtype(
        base_recipe(tiny_model, data_dir, tmp_path / "out", strategy={"kind": "qlora", "r": 4}), "bfloat16"
    )
    assert findings(qlora, CONFIGS / "fsdp.yaml") == ([], [])
    # 8 processes on a 4-GPU machine; the FSDP2 LoRA resume bug on accelerate 1.15; DeepSpeed not installed
    errors, _ = findings(lora, CONFIGS / "fsdp.yaml", gpus=4, accelerate=(1, 15))
    assert len(errors) == 2, errors
    assert "num_processes 8 (8 per machine) but this machine has 4 GPU(s)" in errors[0]
    assert "resuming from its checkpoints silently resets most of each adapter tensor" in errors[1]
    assert "PR #4206" in errors[1]
    errors, _ = findings(lora, CONFIGS / "deepspeed-zero3.yaml", deepspeed=False)
    assert errors == [
        "deepspeed-zero3.yaml: distributed_type DEEPSPEED, but deepspeed is not installed: pip install deepspeed"
    ]


def test_fsdp_with_an_8_bit_model_folder_is_refused(tmp_path, tiny_model, data_dir):
    import json
    import shutil

    eight = tmp_path / "eight-bit"
    shutil.copytree(tiny_model, eight)
    config = json.loads((eight / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    (eight / "config.json").write_text(json.dumps(config))
    recipe = with_dtype(base_recipe(eight, data_dir, tmp_path / "out"), "auto")
    errors, _ = findings(recipe, CONFIGS / "fsdp.yaml")
    assert len(errors) == 1 and "holds bitsandbytes 8-bit weights, which FSDP cannot shard" in errors[0], errors


def test_a_global_batch_that_does_not_divide_the_rows_is_said_precisely():
    from llm_tune.recipe.schema import Recipe
    from llm_tune.train.launch import Launch
    from llm_tune.train.launch_checks import batch_remainder_warning

    recipe = Recipe.model_validate(
        {
            "model": {"name_or_path": "m"},
            "data": {"train": "t.jsonl"},
            "training": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2},
        }
    )
    two = Launch("c", "MULTI_GPU", num_processes=2)
    # 20 rows, rounds of 4 x 2 = 8: 3 rounds, the last completed with 4 rows from the start; steps of 2 rounds
    assert batch_remainder_warning(20, recipe, two) == (
        "20 train rows do not divide into global batches of 16 (per_device_train_batch_size 4 x"
        " gradient_accumulation_steps 2 x 2 processes): accelerate completes the last round of batches with 4 row(s)"
        " from the start of the data, which count twice per epoch; each epoch's last optimizer step averages 8 row(s),"
        " the others 16"
    )
    # one process: nothing repeats, the last step is short
    assert batch_remainder_warning(21, recipe, Launch("c")).endswith(
        "gradient_accumulation_steps 2 x 1 process): each epoch's last optimizer step averages 5 row(s), the others 8"
    )
    assert batch_remainder_warning(32, recipe, two) is None


def test_cpu_ddp_config_passes_and_the_batch_remainder_is_a_warning(capsys, recipe):
    """The whole doctor under --launch cpu-ddp.yaml: a launch section, and 20 rows in rounds of 3 x 2 processes."""
    from llm_tune.cli import main

    main(["doctor", str(recipe), "training.per_device_train_batch_size=3", "--launch", str(CONFIGS / "cpu-ddp.yaml")])
    out = capsys.readouterr().out
    print(out)
    assert "  type      MULTI_GPU, 2 process(es) on 1 machine(s), mixed_precision no" in out
    assert (
        "warning: 20 train rows do not divide into global batches of 6 (per_device_train_batch_size 3 x"
        " gradient_accumulation_steps 1 x 2 processes): accelerate completes the last round of batches with 4"
        " row(s) from the start of the data, which count twice per epoch"
    ) in out
    assert "doctor: no problems" in out
