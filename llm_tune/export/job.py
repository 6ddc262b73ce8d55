"""What every step of an export shares: the job gathered from the run folder, the trained model's outputs on the
verification prompts, and the checks that compare an export against them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_tune.console import say
from llm_tune.errors import UserError
from llm_tune.export import verify
from llm_tune.extras import installed, missing
from llm_tune.model.precision import trained_dtype
from llm_tune.recipe.schema import ExportConfig, Recipe
from llm_tune.recipe.sources import ModelSource
from llm_tune.run_folder import RunFolder

VERIFICATION = "verification.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class ExportFailed(UserError):
    """The export was built but does not reproduce the trained model; nothing was left in place."""


@dataclass
class Job:
    """Everything one export needs, gathered once from the run folder."""

    run_dir: Path
    recipe: Recipe
    options: ExportConfig
    tokenizer: Any = None
    prompts: list[list[int]] = field(default_factory=list)
    reference: verify.Outputs | None = None  # the model as trained, on the prompts
    checks: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)  # which check decides, and its tolerance
    cast_reference: verify.Outputs | None = None  # the trained model cast to the export dtype
    tokenizer_check: dict[str, Any] | None = None  # GGUF: the file's tokenizer against the run's
    gguf: dict[str, Any] | None = None  # GGUF: the file written (name, type, bytes, stop tokens)

    @property
    def run(self) -> RunFolder:
        return RunFolder(self.run_dir)

    @property
    def classifier(self) -> bool:
        return self.recipe.sequence_head

    @property
    def adapter(self) -> bool:
        return self.recipe.adapter

    @property
    def merged(self) -> bool:
        return self.options.merge or not self.adapter or self.is_gguf

    @property
    def is_gguf(self) -> bool:
        """A GGUF file (always of the merged model) rather than a transformers folder."""
        return self.options.gguf

    @property
    def out(self) -> Path:
        if self.options.out:
            return Path(self.options.out)
        return self.run.gguf_export if self.is_gguf else self.run.export(self.merged)

    @property
    def dtype(self) -> str:
        return self.options.dtype or trained_dtype(self.recipe)

    @property
    def labels(self) -> list[str] | None:
        return self.recipe.head_labels if self.classifier else None


def export_options(recipe: Recipe, **given: Any) -> ExportConfig:
    """The recipe's export section (or the defaults) with the command line's choices on top."""
    from pydantic import ValidationError

    given = {key: value for key, value in given.items() if value is not None}
    base = (recipe.export or ExportConfig()).model_dump()
    if given.get("format") == "gguf":
        base["dtype"] = None  # the recipe's safetensors dtype; a GGUF's weights take gguf_type
    try:
        options = ExportConfig.model_validate(base | given)
    except ValidationError as exc:
        problems = [(str(e["loc"][0]).replace("_", "-"), e["msg"], e["input"]) for e in exc.errors()]
        raise UserError(*(f"--{name}: {msg} (got {got!r})" for name, msg, got in problems)) from None
    if not options.gguf and "gguf_type" in given:
        raise UserError(
            f"--gguf-type: applies to --format gguf, and this export is {options.format}; add --format gguf"
        )
    if options.gguf:
        not_gguf = {
            "merge": ("--merge / --no-merge", "a GGUF always holds the merged model"),
            "dtype": ("--dtype", "a GGUF's weights take --gguf-type"),
            "max_shard_size": ("--max-shard-size", "a GGUF is one file"),
        }
        for key, (flag, why) in not_gguf.items():
            if key in given:
                raise UserError(f"{flag}: not for --format gguf ({why})")
        if not installed("gguf"):
            raise UserError(missing("gguf", "--format gguf"))
    return options


def training_arithmetic(model: Any) -> Any:
    """A 4-bit model computing as it did in training. On a CPU with AVX512-BF16, bitsandbytes switches
    Linear4bit to a bfloat16 kernel in eval mode (absmax rounded to bfloat16), which training never ran;
    comparing against that would charge its rounding to the merge."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model


def outputs(job: Job, model: Any) -> verify.Outputs:
    """`model` on the job's verification prompts."""
    from llm_tune.data.prompts import stop_token_ids

    return verify.run_prompts(
        model,
        job.prompts,
        classifier=job.classifier,
        new_tokens=job.options.verify_new_tokens,
        stop=stop_token_ids(job.tokenizer, job.recipe),
        pad=job.tokenizer.pad_token_id,
    )


def check(job: Job, name: str, candidate: verify.Outputs, reference: verify.Outputs | None = None) -> dict:
    result = verify.compare(reference or job.reference, candidate)
    job.checks[name] = result
    say("verify " + verify.describe(name, result))
    return result


def coarsest(*dtypes: str) -> str:
    return max(dtypes, key=lambda name: verify.TOLERANCE[name])


def base_model_reference(recipe: Recipe, options: ExportConfig) -> str:
    """What the adapter config names as its base: the Hub id when known, else the local folder."""
    if options.base_model_id:
        return options.base_model_id
    source = ModelSource.parse(recipe.model.name_or_path)
    return str(Path(source.folder).resolve()) if source.is_local else source.folder
