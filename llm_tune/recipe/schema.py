"""The recipe schema: typed all the way down, unknown keys forbidden at every level.

Names mirror transformers' TrainingArguments and peft's LoraConfig where one exists, so a user who
knows those libraries already knows these keys.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PositiveInt = Field(gt=0)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    name_or_path: str  # local HF folder, a .gguf file, or a Hub id (online only)
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    revision: str | None = None
    trust_remote_code: bool = False
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"


class StrategyConfig(Section):
    kind: Literal["full", "frozen", "lora", "qlora"] = "lora"
    # frozen: how many final transformer blocks train, plus extra modules by name (e.g. "norm", "lm_head").
    trainable_layers: int = Field(2, ge=1)
    trainable_modules: list[str] = []
    # lora / qlora (peft LoraConfig names)
    r: int = Field(16, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: Literal["all-linear"] | list[str] = "all-linear"
    use_dora: bool = False
    use_rslora: bool = False
    # Block indices that get adapters (None: all). Adapting only the top blocks also stops the backward
    # pass there, which is what makes LoRA fast on a CPU.
    layers_to_transform: list[int] | None = None
    # qlora (transformers BitsAndBytesConfig names)
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    bnb_4bit_use_double_quant: bool = True
    bnb_4bit_compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"


class FieldNames(Section):
    """Which column of the data holds what; defaults follow the common dataset layouts."""

    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"
    messages: str = "messages"
    text: str = "text"
    label: str = "label"


class DataConfig(Section):
    train: str
    validation: str | None = None
    validation_fraction: float | None = Field(None, gt=0.0, lt=1.0)
    validation_seed: int = 0  # the seeded shuffle that carves validation_fraction out of train
    format: Literal["alpaca", "chat", "completion", "classification"] = "alpaca"
    fields: FieldNames = FieldNames()
    max_length: int = Field(1024, gt=0)
    train_on_prompt: bool = False  # default: loss on the completion / assistant turns only
    skip_bad_rows: bool = False  # default: an empty or incomplete row stops the run
    system_prompt: str | None = None  # None keeps the chat template's own default
    chat_template: str | None = None  # a .jinja file with {% generation %} markers, for chat models we do not know
    # classification: the instruction a text is wrapped in; {text} and {labels} are filled in.
    prompt: str = "Classify the text as one of: {labels}.\n\nText: {text}"

    @model_validator(mode="after")
    def _one_validation_source(self) -> DataConfig:
        if self.validation and self.validation_fraction:
            raise ValueError("set data.validation or data.validation_fraction, not both")
        return self


class ClassificationConfig(Section):
    head: Literal["sequence", "generate"] = "generate"
    labels: list[str] | None = None  # None: discovered from the training file, sorted
    # sequence head: start each label's row of the new head from the LM-head row of the label's first token, so
    # the untrained classifier already scores like the instruct model's zero-shot answer (tied embeddings only).
    init_head_from_labels: bool = True


class TrainingConfig(Section):
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = -1  # > 0 overrides num_train_epochs
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_steps: float = Field(0, ge=0)  # < 1 is a fraction of the total steps, as in TrainingArguments
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    per_device_train_batch_size: int = Field(4, gt=0)
    per_device_eval_batch_size: int = Field(8, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    gradient_checkpointing: bool = False
    packing: bool = False
    seed: int = 42
    logging_steps: int = Field(10, gt=0)
    eval_steps: int | None = Field(None, gt=0)  # None: evaluate once, at the end
    save_steps: int = Field(500, gt=0)
    save_total_limit: int | None = Field(2, gt=0)
    report_to: Literal["tensorboard", "none"] = "tensorboard"
    resume: str | None = None  # "auto" or a checkpoint folder

    @model_validator(mode="after")
    def _max_steps(self) -> TrainingConfig:
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError("training.max_steps must be a positive number of steps, or -1 to use num_train_epochs")
        return self


class ExportConfig(Section):
    """What `llm_tune export` does, run at the end of training when the section is present."""

    merge: bool = False  # lora/qlora: False = a PEFT adapter folder, True = merged into the base
    out: str | None = None  # default: OUTPUT_DIR/export/adapter or OUTPUT_DIR/export/merged
    dtype: Literal["bfloat16", "float16", "float32"] | None = None  # None: the dtype the model trained in
    # qlora merges: "dequantized" reproduces the trained model (the 4-bit weights it saw, dequantized);
    # "original" merges into the full-precision checkpoint, which drifts by the quantization error.
    qlora_merge_base: Literal["dequantized", "original"] = "dequantized"
    max_shard_size: str = Field("2GB", pattern=r"^[0-9]+(KB|MB|GB|KiB|MiB|GiB)$")  # merged safetensors shard size
    verify_prompts: int = Field(4, gt=0, le=64)  # rows (validation first) run through both models
    verify_new_tokens: int = Field(16, gt=0, le=256)  # greedy tokens compared per prompt
    base_model_id: str | None = None  # Hub id for the model card when model.name_or_path is a local folder
    license: str | None = None  # model card license; None: the base model card's, else "other"


class Recipe(Section):
    model: ModelConfig
    strategy: StrategyConfig = StrategyConfig()
    task: Literal["sft", "classification"] = "sft"
    classification: ClassificationConfig = ClassificationConfig()
    data: DataConfig
    training: TrainingConfig = TrainingConfig()
    output_dir: str = "runs/latest"
    export: ExportConfig | None = None
