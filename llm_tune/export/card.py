"""README.md for every export: Hub metadata up front, then how the model was made, how well the export
reproduces it, and the code that loads it. Everything comes from the run folder, nothing is retyped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from llm_tune import __version__
from llm_tune.export.job import base_model_reference
from llm_tune.model.precision import trained_dtype
from llm_tune.recipe.schema import ExportConfig, Recipe
from llm_tune.recipe.sources import ModelSource
from llm_tune.run_folder import RunFolder, read_json, write_text_atomic

HERE = "path/to/this/folder"  # the loading code's placeholder: this folder, or the Hub repo id once pushed


def write_model_card(
    folder: Path,
    recipe: Recipe,
    options: ExportConfig,
    *,
    merged: bool,
    report: dict[str, Any],
    run_dir: Path,
    gguf: dict[str, Any] | None = None,
) -> None:
    from huggingface_hub import ModelCard

    if gguf:
        usage = running_gguf(gguf)
        if gguf.get("folded"):
            from llm_tune.export.folded_head import folded_usage

            usage = folded_usage(gguf["folded"], gguf["file"]) + "\n\n" + usage
    else:
        usage = "## How to load it\n\n```python\n" + loading_code(recipe, options, merged) + "```"
    sections = [
        "---\n" + card_metadata(recipe, options, merged, gguf).to_yaml() + "\n---",
        _summary(recipe, options, merged, gguf),
        _training(recipe),
        _metrics(run_dir),
        _verification(report),
        usage,
    ]
    card = ModelCard("\n\n".join(s for s in sections if s) + "\n")
    write_text_atomic(folder / "README.md", str(card))


def card_metadata(recipe: Recipe, options: ExportConfig, merged: bool, gguf: dict[str, Any] | None = None) -> Any:
    """The Hub's front matter (huggingface_hub's ModelCardData, so the Hub reads it as it writes it)."""
    from huggingface_hub import ModelCardData

    kind = "text-classification" if recipe.is_classification else "sft"
    tags = ["llm_tune", recipe.strategy.kind, recipe.preference.method if recipe.is_preference else kind]
    if not merged:
        tags.append("lora")
    elif recipe.adapter:
        tags.append("merged")
    if gguf:
        tags += ["gguf", gguf["type"]]
    return ModelCardData(
        license=options.license or _base_license(recipe) or "other",
        base_model=hub_base_id(recipe, options),
        library_name="gguf" if gguf else "transformers" if merged else "peft",
        tags=list(dict.fromkeys(tags)),
        pipeline_tag="text-classification" if recipe.sequence_head else "text-generation",
    )


def hub_base_id(recipe: Recipe, options: ExportConfig) -> str | None:
    """The base as a Hub id: given in the export section, or the recipe's when it is not a local path."""
    if options.base_model_id:
        return options.base_model_id
    source = ModelSource.parse(recipe.model.name_or_path)
    return None if source.is_local else source.folder


def _base_license(recipe: Recipe) -> str | None:
    """The license in the base model's own card, when it is a local folder that has one."""
    from huggingface_hub import ModelCard

    readme = Path(ModelSource.parse(recipe.model.name_or_path).folder) / "README.md"
    if not readme.is_file():
        return None
    try:
        return ModelCard.load(readme).data.license
    except (ValueError, yaml.YAMLError):  # a card whose front matter is not YAML has no license to take
        return None


def _summary(recipe: Recipe, options: ExportConfig, merged: bool, gguf: dict[str, Any] | None) -> str:
    base = hub_base_id(recipe, options) or recipe.model.name_or_path
    layout = "a standard transformers model folder" if merged else "a PEFT adapter folder"
    if gguf:
        layout = (
            f"one GGUF file for llama.cpp, Ollama and LM Studio, `{gguf['file']}` ({gguf['type']},"
            f" {gguf['bytes'] / 2**20:.1f} MiB), holding the tokenizer and the chat template training used"
        )
    if merged and recipe.four_bit:
        layout += f" (adapter merged into the {options.qlora_merge_base} base)"
    elif merged and recipe.adapter:
        layout += " (adapter merged into the base)"
    return (
        f"# Fine-tune of {base}\n\n"
        f"Trained with llm_tune {__version__}: strategy `{recipe.strategy.kind}`, task `{recipe.task}`{_method(recipe)}."
        f" This export is {layout}."
    )


def _method(recipe: Recipe) -> str:
    """A preference run's method and data, and the SFT run it started from."""
    from llm_tune.recipe.methods import method_of

    if not recipe.is_preference:
        return ""
    start = f", starting from the SFT run `{recipe.model.from_run}`" if recipe.model.from_run else ""
    title = method_of(recipe).title
    return (
        f", preference method `{recipe.preference.method}` ({title}) on the pairs in `{recipe.data.train_label}`{start}"
    )


def _training(recipe: Recipe) -> str:
    strategy = recipe.strategy.model_dump(mode="json")
    data = recipe.data.model_dump(mode="json", include={"train", "validation", "mix_by", "format"})
    if not recipe.data.mixed:
        data.pop("mix_by")
    parts = {"model": recipe.model.model_dump(mode="json"), "strategy": strategy, "data": data}
    if recipe.is_classification:
        parts["classification"] = recipe.classification.model_dump(mode="json")
    if recipe.is_preference:
        parts["preference"] = recipe.preference.model_dump(mode="json")
    parts["training"] = recipe.training.model_dump(mode="json")
    return (
        "## Training\n\nFrom the run's resolved recipe:\n\n```yaml\n" + yaml.safe_dump(parts, sort_keys=False) + "```"
    )


def _metrics(run_dir: Path) -> str:
    path = RunFolder(run_dir).metrics
    if not path.is_file():
        return ""
    return "## Metrics\n\n```json\n" + json.dumps(read_json(path), indent=2, sort_keys=True) + "\n```"


def _verification(report: dict[str, Any]) -> str:
    lines = [
        "## Export verification\n",
        f"{report['prompts']} prompts run through the model as trained and through this export"
        f" ({report.get('gguf_type') or report['dtype']}):\n",
        "| check | max abs logit diff | greedy token agreement | exact |",
        "|---|---|---|---|",
    ]
    for name, result in report["checks"].items():
        lines.append(
            f"| {name} | {result['max_abs_logit_diff']:.3g} | {result['greedy_token_agreement']:.1%}"
            f" | {result['greedy_exact_match']} |"
        )
    if report.get("qlora_merge_base"):
        lines.append(
            f"\nQLoRA: merged into the `{report['qlora_merge_base']}` base. Both merge bases are measured against"
            " the trained model (4-bit base + adapter): `dequantized` reproduces it, `original` (the full-precision"
            " checkpoint) drifts by the quantization error."
        )
    gate = report.get("gate") or {}
    if gate:
        lines.append(f"\nGate: `{gate['check']}` within the {gate['dtype']} tolerance {gate['tolerance']:.4g}.")
    if report.get("tokenizer"):
        from llm_tune.export.verify import describe_tokenizer

        lines.append(
            f"\nTokenizer round trip, the file's tokenizer against the run's: {describe_tokenizer(report['tokenizer'])}."
        )
    return "\n".join(lines)


def running_gguf(gguf: dict[str, Any]) -> str:
    """How to run the file: llama.cpp, Ollama, and transformers (which verified it)."""
    name = gguf["file"]
    model = name.removesuffix(".gguf").lower()
    modelfile = "\n".join([f"FROM ./{name}", *(f'PARAMETER stop "{token}"' for token in gguf["stop_tokens"])])
    return "\n".join(
        [
            "## How to run it\n",
            "llama.cpp (`--jinja` renders the chat template stored in the file, the one training used):\n",
            "```bash",
            f"llama-cli -m {name} --jinja -cnv",
            f"llama-server -m {name} --jinja --port 8080   # OpenAI-compatible API",
            "```\n",
            "Ollama: save these lines as `Modelfile` beside the file (Ollama takes the chat template from the file; the"
            " stop lines are the tokens training ended its answers with):\n",
            "```",
            modelfile,
            "```\n",
            "```bash",
            f"ollama create {model} -f Modelfile",
            f"ollama run {model}",
            "```\n",
            "transformers (how this export was verified):\n",
            "```python",
            gguf_loading_code(gguf) + "```",
        ]
    )


def gguf_loading_code(gguf: dict[str, Any]) -> str:
    lines = [
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f'tokenizer = AutoTokenizer.from_pretrained("{HERE}", gguf_file="{gguf["file"]}")',
        f'model = AutoModelForCausalLM.from_pretrained("{HERE}", gguf_file="{gguf["file"]}")',
        'messages = [{"role": "user", "content": "Hello!"}]',
        'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)',
        f"stop = tokenizer.convert_tokens_to_ids({gguf['stop_tokens']!r})  # where training ended its answers",
        "output = model.generate(**inputs, max_new_tokens=128, eos_token_id=stop)",
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
    ]
    return "\n".join(lines) + "\n"


def loading_code(recipe: Recipe, options: ExportConfig, merged: bool) -> str:
    classifier = recipe.sequence_head
    auto = "AutoModelForSequenceClassification" if classifier else "AutoModelForCausalLM"
    lines = [f"from transformers import AutoTokenizer, {auto}", f'tokenizer = AutoTokenizer.from_pretrained("{HERE}")']
    if merged:
        lines += [f'model = {auto}.from_pretrained("{HERE}")']
    else:
        imports = ["from peft import PeftModel"]
        if recipe.four_bit:
            imports += ["import torch", "from transformers import BitsAndBytesConfig"]
        lines = [*imports, *lines, *_adapter_base_lines(recipe, options, auto, classifier)]
        lines.append(f'model = PeftModel.from_pretrained(base, "{HERE}")')
    if classifier:
        lines += classifier_reading(recipe)
    else:
        lines += [
            'messages = [{"role": "user", "content": "Hello!"}]',
            'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)',
            "# generation_config.json stops at the end-of-turn token the model was trained to emit",
            "output = model.generate(**inputs, max_new_tokens=128)",
            'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
        ]
    return "\n".join(lines) + "\n"


def classifier_reading(recipe: Recipe) -> list[str]:
    """The sequence head as `predict` reads it: the text wrapped in the prompt training used (data.prompt, the
    system prompt, the chat template), then softmax (a calibrated temperature is folded into the head), the
    thresholds over sigmoids (multi-label), or the score on its own scale (regression)."""
    from llm_tune.export.head_scale import declared

    data, c = recipe.data, recipe.classification
    fill = f'text=text, labels="{", ".join(c.labels or [])}"' + (
        ', text_pair="Second text"' if data.fields.text_pair else ""
    )
    system = (
        [f'messages.insert(0, {{"role": "system", "content": {data.system_prompt!r}}})']
        if data.system_prompt is not None
        else []
    )
    header = f"{data.system_prompt}\n\n" if data.system_prompt else ""
    lines = [
        "import torch",
        f"prompt = {data.prompt!r}  # data.prompt: how training wrapped each text",
        'text = "Text to classify"',
        f"user = prompt.format({fill})",
        'messages = [{"role": "user", "content": user}]',
        *system,
        "if tokenizer.chat_template:  # the chat training rendered (the last tokens, up to data.max_length, are read)",
        '    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)',
        "else:",
        f'    inputs = tokenizer({header!r} + f"### Instruction:\\n{{user}}\\n\\n### Response:\\n", return_tensors="pt")',
        "logits = model(**inputs).logits[0].float()",
    ]  # fmt: skip
    facts = declared(recipe)
    if recipe.problem_type == "regression":
        scale = f" * {facts['target_std']!r} + {facts['target_mean']!r}" if "target_mean" in facts else ""
        why = "  # the head trains on (score - mean) / std" if scale else ""
        return lines + [f"score = float(logits[0]){scale}{why}", "print(score)"]
    if recipe.problem_type == "multi_label_classification":
        thresholds = facts.get("label_thresholds") or dict.fromkeys(c.labels or [], 0.5)
        return lines + [
            "probabilities = torch.sigmoid(logits)",
            f"thresholds = {thresholds!r}  # tuned on validation rows after training",
            "print([model.config.id2label[i] for i, p in enumerate(probabilities.tolist())"
            " if p >= thresholds[model.config.id2label[i]]])",
        ]
    folded = "  # the calibrated temperature is folded into the head" if c.temperature else ""
    return lines + [
        f"probabilities = torch.softmax(logits, -1){folded}",
        "print({model.config.id2label[i]: p for i, p in enumerate(probabilities.tolist())})",
    ]


def _adapter_base_lines(recipe: Recipe, options: ExportConfig, auto: str, classifier: bool) -> list[str]:
    args = [f'"{base_model_reference(recipe, options)}"']
    lines = []
    if recipe.four_bit:
        s = recipe.four_bit
        lines += [
            "# the 4-bit base the adapter was trained against (the merged export needs no bitsandbytes)",
            f'quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="{s.bnb_4bit_quant_type}",'
            f" bnb_4bit_use_double_quant={s.bnb_4bit_use_double_quant},"
            f" bnb_4bit_compute_dtype=torch.{trained_dtype(recipe)})",
        ]
        args.append("quantization_config=quant")
    if classifier:
        labels = recipe.head_labels or []
        args += [
            f"num_labels={len(labels)}",
            f"id2label={dict(enumerate(labels))}",
            f"label2id={ {label: i for i, label in enumerate(labels)} }",
            f'problem_type="{recipe.problem_type}"',
        ]
    lines.append(f"base = {auto}.from_pretrained({', '.join(args)})")
    if classifier:
        # the classifier pools the last non-pad token: the pad token must be the one training used
        lines.append("base.config.pad_token_id = tokenizer.pad_token_id")
    return lines
