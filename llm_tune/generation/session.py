"""What `generate` and `chat` talk to: a run's trained model (its adapter on the base, or the saved full/frozen
model) or a merged export folder, with how training rendered its prompts and the tokens its answers stop at."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llm_tune.console import say
from llm_tune.errors import UserError
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import MANIFEST, RunFolder, read_json


@dataclass(frozen=True)
class Target:
    """A folder to talk to, read without loading any weights: its run's recipe (None for an export whose run
    folder is not beside it) and, for an export, its manifest."""

    path: Path
    recipe: Recipe | None
    manifest: dict[str, Any] | None = None


@dataclass
class Session:
    label: str
    model: Any
    tokenizer: Any
    recipe: Recipe | None
    stop: list[int]
    autocast: bool  # bfloat16 autocast over float32 weights, as the run trained
    adapter_off: bool = False  # the base of a LoRA run: the same model with its adapter disabled

    def prompt(self, text: str) -> list[int]:
        """`text` rendered as training rendered a row's prompt (chat template and system prompt, or raw text)."""
        from llm_tune.data.formats import user_prompt
        from llm_tune.data.prompts import prompt_ids

        conversational = self.tokenizer.chat_template is not None
        if self.recipe is None:
            prompt: Any = [{"role": "user", "content": text}] if conversational else text
        else:
            prompt = user_prompt(text, self.recipe.data, self.recipe.classification.labels, conversational)
        return prompt_ids(self.tokenizer, prompt)

    def conversation(self, messages: list[dict[str, str]]) -> list[int]:
        """A multi-turn chat, with the recipe's system prompt, up to where the next assistant reply starts."""
        from llm_tune.data.prompts import prompt_ids
        from llm_tune.data.turns import with_system

        system = self.recipe.data.system_prompt if self.recipe else None
        return prompt_ids(self.tokenizer, with_system(messages, system))

    def answer(self, ids: list[int], max_new_tokens: int, streamer: Any = None) -> str:
        from contextlib import nullcontext

        from llm_tune.model.decoding import greedy

        off = self.model.disable_adapter() if self.adapter_off else nullcontext()
        with off:
            new = greedy(
                self.model,
                ids,
                max_new_tokens=max_new_tokens,
                stop=self.stop,
                pad=self.tokenizer.pad_token_id,
                autocast=self.autocast,
                streamer=streamer,
            )
        return self.tokenizer.decode(new, skip_special_tokens=True).strip()


def locate(path: Path) -> Target:
    """The run folder or merged export at `path`; a folder that is neither, an adapter export or a classifier
    is refused here, before any weights load."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        manifest = read_json(path / MANIFEST)
        _refuse_classifier(path, manifest.get("task") in CLASSIFIER_TASKS, "RUN_DIR")
        if manifest.get("layout") != "merged":
            raise UserError(
                f"{path}: an adapter export; give its run folder, or a merged export"
                " (`python -m llm_tune export RUN_DIR --merge`)"
            )
        run = RunFolder(path.parent.parent)  # the default place: RUN_DIR/export/merged
        same = run.is_run() and run.root.resolve().name == manifest.get("run")
        return Target(path, run.read_recipe() if same else None, manifest)
    run = RunFolder(path)
    if not run.is_run():
        raise UserError(
            f"{path}: neither a run folder (no {run.recipe_file.name}) nor an llm_tune export (no {MANIFEST});"
            " give a run's output_dir or its export/merged folder"
        )
    recipe = run.read_recipe()
    _refuse_classifier(path, recipe.is_classification, str(path))
    return Target(path, recipe)


# An export's manifest names the task its run trained (export/exporter.py).
CLASSIFIER_TASKS = ("classification",)


def _refuse_classifier(path: Path, classifier: bool, run_dir: str) -> None:
    if classifier:
        raise UserError(
            f"{path}: a classification run answers with label probabilities, not text; use"
            f' `python -m llm_tune predict {run_dir} --text "..."`'
        )


def open_session(target: Target) -> Session:
    """The target's model in eval mode (on the GPU when there is one), ready to answer."""
    from llm_tune.data.prompts import export_chat_template, stop_token_ids
    from llm_tune.model.precision import mixed_precision
    from llm_tune.model.trained import load_trained

    if target.manifest is not None:
        return _export_session(target)
    recipe = target.recipe
    trained = load_trained(target.path)
    tokenizer = trained.tokenizer
    # The template training rendered with (a recipe's own .jinja file, less its generation markers).
    tokenizer.chat_template = export_chat_template(tokenizer, recipe)
    model = _on_device(trained.model, four_bit=recipe.four_bit is not None)
    stop = stop_token_ids(tokenizer, recipe)
    return Session("fine-tuned", model, tokenizer, recipe, stop, mixed_precision(recipe.model))


def _export_session(target: Target) -> Session:
    from transformers import AutoTokenizer

    from llm_tune.model.precision import mixed_precision
    from llm_tune.model.trained import load_exported_model

    dtype = target.manifest.get("dtype", "float32")
    if target.recipe is None:
        say(
            f"{target.path}: its run folder is not beside it; prompts render through the export's chat template,"
            " without the recipe's system prompt"
        )
    model = load_exported_model(target.path, classifier=False, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(target.path)
    stop = model.generation_config.eos_token_id  # the export's: the end-of-turn token training taught
    stop = [stop] if isinstance(stop, int) else list(stop or [tokenizer.eos_token_id])
    autocast = target.recipe is not None and dtype == "float32" and mixed_precision(target.recipe.model)
    return Session("exported", _on_device(model.eval()), tokenizer, target.recipe, stop, autocast)


def require_base(target: Target) -> Recipe:
    """The recipe that names the target's base model, or an error before anything loads."""
    if target.recipe is None:
        raise UserError(
            f"--compare-base: {target.path} is an export without its run folder beside it, so its base model is"
            " unknown; give the run folder instead"
        )
    return target.recipe


def base_session(session: Session, target: Target) -> Session:
    """The base model the run started from, asked the same prompts with the same decoding. A LoRA run's base is
    its own model with the adapter disabled; any other base is loaded in full precision (a QLoRA run's too)."""
    from llm_tune.model.loading import load_model

    recipe = require_base(target)
    label = f"base {recipe.model.name_or_path}"
    if target.manifest is None and recipe.adapter and recipe.four_bit is None:  # the run's own PeftModel
        return replace(session, label=label, adapter_off=True)
    say(f"loading the base model {recipe.model.name_or_path}")
    base = load_model(recipe.model, session.tokenizer)
    return replace(session, label=label, model=_on_device(base.eval()))


def _on_device(model: Any, four_bit: bool = False) -> Any:
    """On the GPU when there is one; a 4-bit model is already placed by its quantizer."""
    import torch

    if torch.cuda.is_available() and not four_bit:
        model = model.to("cuda")
    return model
