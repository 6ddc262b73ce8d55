"""The recipe schema: typed all the way down, unknown keys forbidden at every level, every key described.

Names mirror transformers' TrainingArguments and peft's LoraConfig where one exists, so a user who knows those
libraries already knows these keys. `python -m llm_tune keys [SECTION]` prints this file's descriptions.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from llm_tune.recipe.data import DataConfig
from llm_tune.recipe.preference import DpoConfig, Preference
from llm_tune.recipe.section import Section


class ModelConfig(Section):
    name_or_path: str = Field(description="a local transformers folder, a .gguf file, or a Hub id (online only)")
    dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto",
        description="auto: float32 weights computed under bfloat16 autocast where the hardware has bfloat16 (a GPU,"
        " or a CPU with AVX512-BF16 or AMX), plain float32 elsewhere; float32: exact, no autocast; bfloat16:"
        " bfloat16 weights",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of a Hub model")
    trust_remote_code: bool = Field(False, description="allow a Hub model's own Python code to run")
    attn_implementation: Literal["sdpa", "eager"] = Field("sdpa", description="attention kernel")
    from_run: str | None = Field(
        None,
        description="task preference: start from a finished SFT run folder (its adapter continues, or its full"
        " model), with that policy as the reference; name_or_path must be the base that run trained on",
    )


class FullStrategy(Section):
    """Every weight trains."""

    kind: Literal["full"] = Field("full", description="full: every weight trains")


class FrozenStrategy(Section):
    """Only the last blocks (and named modules) train; every other weight stays bit-identical."""

    kind: Literal["frozen"] = Field("frozen", description="frozen: only the last blocks and named modules train")
    trainable_layers: int = Field(
        2,
        ge=0,
        description="how many final transformer blocks train; 0: a linear probe (only the classification"
        " head, or the trainable_modules, train)",
    )
    trainable_modules: list[str] = Field(
        [], description="more modules that train, matched by the last part of their name (e.g. norm, lm_head)"
    )
    unfreeze_every_steps: int | None = Field(
        None,
        gt=0,
        description="gradual unfreezing: every N optimizer steps the next block down starts training too,"
        " until all do (one process only); null: the same blocks train throughout",
    )


class LoraStrategy(Section):
    """A LoRA adapter (peft LoraConfig names) on a frozen base."""

    kind: Literal["lora"] = Field("lora", description="lora: a low-rank adapter trains, the base stays frozen")
    r: int = Field(16, gt=0, description="adapter rank: the capacity of the update")
    lora_alpha: int = Field(32, gt=0, description="scale of the update: alpha / r (alpha / sqrt(r) with use_rslora)")
    lora_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="dropout on the adapter's input (peft's default 0); on a CPU each adapted layer then draws a"
        " random mask per step, about a third of a LoRA step's time",
    )
    target_modules: Literal["all-linear"] | list[str] = Field(
        "all-linear", description="all-linear, or the linear layers to adapt by name (e.g. [q_proj, v_proj])"
    )
    use_dora: bool = Field(False, description="DoRA: weight-decomposed LoRA")
    use_rslora: bool = Field(False, description="rank-stabilised scaling alpha / sqrt(r)")
    layers_to_transform: list[int] | None = Field(
        None,
        description="block indices that get adapters (null: all); adapting only the top blocks also stops the"
        " backward pass there, which is what makes LoRA fast on a CPU",
    )


class QLoraStrategy(LoraStrategy):
    """LoRA over a 4-bit base (bitsandbytes; transformers BitsAndBytesConfig names)."""

    # The union's tag narrows in the subclass (pydantic's discriminated union); mypy sees a widening.
    kind: Literal["qlora"] = Field("qlora", description="qlora: a LoRA adapter over a 4-bit quantized base")  # type: ignore[assignment]
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type (nf4: QLoRA's NormalFloat4)")
    bnb_4bit_use_double_quant: bool = Field(True, description="quantize the quantization constants too")
    bnb_4bit_compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="dtype the 4-bit layers compute in; auto: the model dtype"
    )


STRATEGIES: dict[str, type[Section]] = {
    "full": FullStrategy,
    "frozen": FrozenStrategy,
    "lora": LoraStrategy,
    "qlora": QLoraStrategy,
}


def _strategy_kind(value: Any) -> str:
    """The tag that picks a strategy class; a section without `kind` is LoRA, the default strategy."""
    kind = value.get("kind", "lora") if isinstance(value, dict) else getattr(value, "kind", "lora")
    return kind if kind in STRATEGIES else "unknown"


Strategy = Annotated[
    Annotated[FullStrategy, Tag("full")]
    | Annotated[FrozenStrategy, Tag("frozen")]
    | Annotated[LoraStrategy, Tag("lora")]
    | Annotated[QLoraStrategy, Tag("qlora")],
    Discriminator(_strategy_kind),
]


class ClassificationConfig(Section):
    head: Literal["sequence", "generate"] = Field(
        "generate",
        description="sequence: a classifier head on the last prompt token; generate: the label as a completion,"
        " scored by its log-likelihood",
    )
    labels: list[str] | None = Field(
        None,
        description="the label set; null: a ClassLabel column's names, else discovered from the training file, sorted"
        " (integers by value). Integer labels in the rows are label names when the set has them, else indices into"
        " it; true/false read as 'true'/'false' (regression: none)",
    )
    init_head_from_labels: bool = Field(
        True,
        description="sequence head: start each label's row from the LM-head row of the label's first token, so the"
        " untrained head scores like the instruct model's zero-shot answer (tied embeddings only)",
    )
    class_weights: Literal["balanced"] | dict[str, float] | None = Field(
        None,
        description="single-label heads (sequence and generate): each row's loss is multiplied by its label's"
        " weight; balanced: rows / (labels x rows of the label), counted on the training rows; {label: weight}:"
        " labels left out weigh 1; the run's recipe records the resolved weights; null: every row weighs 1",
    )
    thresholds: dict[str, float] | None = Field(
        None,
        description="multi_label: the probability over which a label is predicted, per label; null: tuned on"
        " the validation rows after training for the best F1 per label (0.5 without validation rows), and written"
        " here in the run's recipe",
    )
    calibrate: bool = Field(
        False,
        description="single-label heads: after training, fit a temperature on the validation rows (temperature"
        " scaling: the same predictions, honest probabilities); the report shows the expected calibration error"
        " before and after and a reliability diagram",
    )
    temperature: float | None = Field(
        None,
        gt=0,
        description="single-label heads: probabilities are softmax(scores / temperature) in eval, predict"
        " and exports; set by calibrate (and written here in the run's recipe); null: 1",
    )
    normalize_targets: bool = Field(
        False,
        description="regression: train on (score - mean) / std of the training scores; predictions are mapped"
        " back, and the run's recipe records target_mean and target_std",
    )
    target_mean: float | None = Field(None, description="regression: set by normalize_targets (the training mean)")
    target_std: float | None = Field(
        None, gt=0, description="regression: set by normalize_targets (the training standard deviation)"
    )


class TrainingConfig(Section):
    num_train_epochs: float = Field(1.0, gt=0, description="passes over the training rows")
    max_steps: int = Field(-1, description="optimizer steps; > 0 overrides num_train_epochs")
    learning_rate: float = Field(2e-4, gt=0, description="peak learning rate")
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="learning-rate schedule after warmup"
    )
    warmup_steps: float = Field(0, ge=0, description="warmup steps; below 1, a fraction of the total steps")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping norm (0: off)")
    per_device_train_batch_size: int = Field(4, gt=0, description="rows per step on each process")
    per_device_eval_batch_size: int = Field(8, gt=0, description="rows per batch in evaluation and predict")
    gradient_accumulation_steps: int = Field(1, gt=0, description="micro-batches summed into one optimizer step")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass to save memory")
    packing: bool = Field(False, description="pack several rows into one sequence (kept apart by position ids)")
    group_by_length: bool = Field(
        True, description="batches of rows of similar length (less padding); false: a plain seeded shuffle"
    )
    seed: int = Field(42, description="seed of the data order, dropout and new weights")
    logging_steps: int = Field(10, gt=0, description="log the training loss every N steps")
    progress_every_s: float = Field(
        30.0,
        ge=0,
        description="when stdout is not a terminal (a log file, CI, a pipe): the least seconds between two"
        " plain progress lines (step, loss, lr, tokens/s, ETA), printed at logging steps; a terminal shows a bar",
    )
    eval_steps: int | None = Field(
        None,
        gt=0,
        description="evaluate on the validation rows every N steps (classification: accuracy and"
        " macro-F1 too); null: once, at the end",
    )
    metric_for_best_model: Literal[
        "eval_loss", "eval_accuracy", "eval_macro_f1", "eval_rewards/accuracies", "eval_rewards/margins"
    ] = Field(
        "eval_loss",
        description="the validation metric that picks the best checkpoint and drives early stopping"
        " (accuracy and macro-F1: classification runs; TRL's reward accuracy and margin: preference runs)",
    )
    early_stopping_patience: int | None = Field(
        None,
        gt=0,
        description="stop after this many evaluations without improvement, and keep the best checkpoint"
        " as the run's weights; null: train to the end",
    )
    early_stopping_threshold: float | None = Field(
        None,
        ge=0,
        description="with early_stopping_patience: how much the metric must improve to count as better"
        " (null: any improvement)",
    )
    layerwise_lr_decay: float | None = Field(
        None,
        gt=0,
        le=1,
        description="discriminative rates: block i trains at learning_rate x decay^(top - i), the"
        " embeddings one step below block 0, the head and final norm at learning_rate (input embeddings tied to the"
        " head are the head's weight: full rate); null: one rate",
    )
    save_steps: int = Field(500, gt=0, description="save a resumable checkpoint every N steps")
    save_total_limit: int | None = Field(2, gt=0, description="checkpoints kept; null: all")
    report_to: Literal["tensorboard", "none"] = Field("tensorboard", description="where training logs go")
    resume: str | None = Field(None, description="auto (the latest complete checkpoint) or a checkpoint folder")

    @model_validator(mode="after")
    def _max_steps(self) -> TrainingConfig:
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError("training.max_steps must be a positive number of steps, or -1 to use num_train_epochs")
        return self

    @property
    def keeps_best(self) -> bool:
        """The best checkpoint (by metric_for_best_model) becomes the run's weights."""
        return self.early_stopping_patience is not None

    @property
    def greater_is_better(self) -> bool:
        return self.metric_for_best_model != "eval_loss"


class ExportConfig(Section):
    """What `llm_tune export` does, run at the end of training when the section is present."""

    format: Literal["safetensors", "gguf"] = Field(
        "safetensors",
        description="safetensors: an adapter or merged transformers folder; gguf: the merged model as one .gguf file"
        " for llama.cpp, Ollama and LM Studio (llama architecture), in OUTPUT_DIR/export/gguf",
    )
    gguf_type: Literal["f32", "f16", "bf16", "q8_0"] = Field(
        "f16",
        description="format gguf: the type of the weight matrices (norms stay f32); q8_0: 8-bit blocks, about half"
        " the size of f16",
    )
    merge: bool = Field(False, description="lora/qlora: false gives a PEFT adapter folder, true merges into the base")
    out: str | None = Field(
        None,
        description="export folder; null: OUTPUT_DIR/export/adapter, OUTPUT_DIR/export/merged or OUTPUT_DIR/export/gguf",
    )
    dtype: Literal["bfloat16", "float16", "float32"] | None = Field(
        None, description="format safetensors: dtype of the exported weights; null: the dtype the model trained in"
    )
    qlora_merge_base: Literal["dequantized", "original"] = Field(
        "dequantized",
        description="qlora merges: dequantized reproduces the trained model (the 4-bit weights it saw);"
        " original merges into the full-precision checkpoint, which drifts by the quantization error",
    )
    max_shard_size: str = Field(
        "2GB", pattern=r"^[0-9]+(KB|MB|GB|KiB|MiB|GiB)$", description="merged safetensors shard size"
    )
    verify_prompts: int = Field(4, gt=0, le=64, description="rows (validation first) run through both models")
    verify_new_tokens: int = Field(16, gt=0, le=256, description="greedy tokens compared per prompt")
    base_model_id: str | None = Field(
        None, description="Hub id for the model card and adapter config when model.name_or_path is a local folder"
    )
    license: str | None = Field(None, description="model card license; null: the base model card's, else other")

    @property
    def gguf(self) -> bool:
        """One GGUF file of the merged model, rather than a transformers folder."""
        return self.format == "gguf"


class Recipe(Section):
    model: ModelConfig = Field(description="the base model")
    strategy: Strategy = Field(LoraStrategy(), description="which weights train: full, frozen, lora or qlora")
    task: Literal["sft", "classification", "preference"] = Field(
        "sft", description="sft (causal LM), classification, or preference (DPO, KTO, ORPO, SimPO on preference data)"
    )
    classification: ClassificationConfig = Field(ClassificationConfig(), description="classification runs")
    preference: Preference = Field(DpoConfig(), description="preference runs: the method and its keys")
    data: DataConfig = Field(description="where the rows come from and how they are read")
    training: TrainingConfig = Field(TrainingConfig(), description="the trainer (TrainingArguments names)")
    output_dir: str = Field("runs/latest", description="the run folder")
    export: ExportConfig | None = Field(None, description="export at the end of training (see `llm_tune export`)")

    @property
    def is_classification(self) -> bool:
        """The run trains a classifier (scored by label probabilities), not a text generator."""
        return self.task == "classification"

    @property
    def is_preference(self) -> bool:
        """The run tunes a policy on preference data (recipe/methods.py: the method's record)."""
        return self.task == "preference"

    @property
    def reads_labels(self) -> bool:
        """The rows carry targets (data.labelled), whatever the task; a label set is resolved."""
        return self.is_classification or self.data.labelled

    @property
    def sequence_head(self) -> bool:
        """A classifier head on the base (a sequence-classification model), rather than a causal LM."""
        return self.is_classification and self.classification.head == "sequence"

    @property
    def problem_type(self) -> str:
        """transformers' problem_type of a sequence head: what its outputs mean and which loss trains them."""
        return {"multi_label": "multi_label_classification", "regression": "regression"}.get(
            self.data.format, "single_label_classification"
        )

    @property
    def head_labels(self) -> list[str] | None:
        """The outputs of a sequence head (one per label, or the one score of regression); None: a causal LM."""
        if not self.sequence_head:
            return None
        return [self.data.fields.score] if self.data.format == "regression" else self.classification.labels

    @property
    def adapter(self) -> bool:
        """The run trains (and saves) an adapter rather than the model's own weights."""
        return isinstance(self.strategy, LoraStrategy)

    @property
    def four_bit(self) -> QLoraStrategy | None:
        """The 4-bit settings the base loads with, or None for a full-precision base."""
        return self.strategy if isinstance(self.strategy, QLoraStrategy) else None
