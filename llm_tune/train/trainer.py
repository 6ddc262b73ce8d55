"""From a recipe to a configured trainer: TRL's SFTTrainer for causal-LM SFT, transformers' Trainer for a
sequence-classification head. Pure adapters first (recipe -> SFTConfig), then the trainer itself."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from llm_tune.errors import UserError
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

    from llm_tune.data.formats import Splits


def trainer_arguments(recipe: Recipe, run: RunFolder, has_validation: bool) -> dict[str, Any]:
    """The recipe's training section as TrainingArguments keywords (shared by both trainers). Every knob is passed
    explicitly: TRL's SFTConfig changes some of transformers' defaults (activation checkpointing and bf16 on), so a
    key left out would silently become TRL's choice rather than the recipe's."""
    import torch

    from llm_tune.model.precision import mixed_precision
    from llm_tune.train.monitor import best_model_arguments

    t = recipe.training
    evaluate_every = has_validation and t.eval_steps is not None
    arguments: dict[str, Any] = dict(
        output_dir=str(run.checkpoints),
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if evaluate_every else "no",
        eval_steps=t.eval_steps if evaluate_every else None,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        report_to=[] if t.report_to == "none" else [t.report_to],
        # bfloat16 autocast over float32 weights (the optimizer keeps float32 master copies), where the hardware
        # computes bfloat16 natively; TRL refuses bf16 on a CPU unless use_cpu is set.
        bf16=mixed_precision(recipe.model),
        fp16=False,
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        # Batches of similar lengths carry little padding; the seeded order is the same on every run and rank.
        # A stream groups by length itself (data/stream.py); the Trainer has no sampler for it.
        train_sampling_strategy="group_by_length" if t.group_by_length and not recipe.data.streaming else "random",
        include_num_input_tokens_seen="non_padding",
        # Every trainable weight takes part in every step (adapters, unfrozen blocks, the head): no search.
        ddp_find_unused_parameters=False,
        disable_tqdm=False,
    )
    arguments.update(best_model_arguments(t))
    return arguments


def sft_config(recipe: Recipe, arguments: dict[str, Any]) -> Any:
    """TRL's SFTConfig: the shared arguments plus how rows become token sequences and which tokens train."""
    from trl import SFTConfig

    data = recipe.data
    return SFTConfig(
        **arguments,
        max_length=data.max_length,
        packing=recipe.training.packing,
        packing_strategy="bfd",
        # Which tokens train is already in the rows' labels (data/tokens.py applies these rules), so TRL's own
        # masking is off: it would find no prompt/messages columns in tokenized rows to mask by.
        completion_only_loss=False,
        assistant_only_loss=False,
        dataset_text_field="text",
        # Rows arrive tokenized, labelled and truncated (data/tokens.py); packing is still TRL's.
        dataset_kwargs={"skip_prepare_dataset": not recipe.training.packing},
    )


def training_arguments(recipe: Recipe, run: RunFolder, has_validation: bool) -> Any:
    """The trainer's arguments object (TRL's SFTConfig, or TrainingArguments for a sequence head), with the
    processes joined: creating it reads the launcher's DeepSpeed config (which is what makes transformers build a
    ZeRO-3 model already sharded) and `.device` sets up the process group and this rank's GPU (which FSDP's
    RAM-efficient loading needs). So the pipeline makes it before the model."""
    from transformers import TrainingArguments

    arguments = trainer_arguments(recipe, run, has_validation)
    args = TrainingArguments(**arguments) if recipe.sequence_head else sft_config(recipe, arguments)
    args.device  # noqa: B018  (a property with the side effect above)
    return args


def build_trainer(
    recipe: Recipe,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    splits: Splits,
    run: RunFolder,
    args: Any = None,
) -> Trainer:
    """The configured trainer; `args` from training_arguments (made here when not given)."""
    from llm_tune.train.monitor import label_rows, watch_callbacks

    if args is None:
        args = training_arguments(recipe, run, splits.validation is not None)
    if recipe.training.report_to == "tensorboard":
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run.logs)
    if recipe.sequence_head:
        trainer = _classifier_trainer(recipe, model, tokenizer, splits, args)
    else:
        train = (
            _stream(recipe, tokenizer, args)
            if recipe.data.streaming
            else _tokenized(recipe, tokenizer, splits, "train")
        )
        validation = _tokenized(recipe, tokenizer, splits, "validation")
        trainer = trainer_class(recipe)(
            model=model,
            args=args,
            train_dataset=train,
            eval_dataset=validation,
            processing_class=tokenizer,
        )
        if recipe.is_classification and recipe.classification.class_weights is not None:
            trainer.token_weight = _answer_token_weight(recipe, tokenizer, trainer.train_dataset)
    if recipe.is_classification and splits.validation is not None:
        trainer.label_rows = label_rows(recipe, splits.validation, splits.source_names.get("validation"))
    trainer.layerwise_lr_decay = recipe.training.layerwise_lr_decay
    _mix(trainer, recipe, splits)
    for callback in watch_callbacks(recipe.training):
        trainer.add_callback(callback)
    every = getattr(recipe.strategy, "unfreeze_every_steps", None)
    if every is not None:
        from llm_tune.train.layers import UnfreezeOnSchedule

        if trainer.args.world_size > 1:
            raise UserError(
                "strategy.unfreeze_every_steps: gradual unfreezing changes which weights train during the run, which"
                " distributed data parallel cannot follow; train it in one process"
            )
        trainer.add_callback(UnfreezeOnSchedule(model, recipe.strategy.trainable_layers, every))
    return trainer


def _mix(trainer: Any, recipe: Recipe, splits: Splits) -> None:
    """A list of sources: the training order draws each epoch's rows by the weights (train/order.py), and each
    validation source is also evaluated on its own (train/sources.py); the shares go into the run's notes."""
    from llm_tune.data.mixture import SOURCE, epoch_shares

    names = splits.source_names
    if "train" in names:
        data, dataset = recipe.data, trainer.train_dataset
        weights = [source.weight for source in data.train_sources]
        lengths = [len(ids) for ids in dataset["input_ids"]]
        trainer.mixture = epoch_shares(names["train"], weights, lengths, dataset[SOURCE], data.mix_by)
        if empty := [i for i, share in enumerate(trainer.mixture) if share.rows == 0]:
            raise UserError(*(f"data.train[{i}] ({data.train_sources[i].path}): no row keeps a trained token after"
                              " truncation; raise data.max_length or drop the source" for i in empty))  # fmt: skip
        splits.notes += [share.line(data.mix_by) for share in trainer.mixture]
    if "validation" in names and trainer.eval_dataset is not None:
        trainer.validation_sources = names["validation"]


def trainer_class(recipe: Recipe) -> type:
    """The trainer for the recipe: TRL's SFTTrainer or transformers' Trainer (a sequence head), with llm_tune's
    mixins: the label-only loss on a CPU (train/loss.py), label scoring for classification (train/monitor.py)
    layer-wise learning rates and gradual unfreezing (train/layers.py)."""
    import torch
    from transformers import Trainer
    from trl import SFTTrainer

    from llm_tune.train.layers import GradualUnfreezing, LayerwiseRates
    from llm_tune.train.loss import LabelOnlyLoss
    from llm_tune.train.monitor import ClassifierEvaluation
    from llm_tune.train.order import ExactOrder
    from llm_tune.train.sources import SourceEvaluation

    # The training order a pure function of (seed, epoch, global batch); a validation mixture's losses by source.
    mixins: list[type] = [ExactOrder, SourceEvaluation]
    if recipe.is_classification:
        mixins.append(ClassifierEvaluation)
    if getattr(recipe.strategy, "unfreeze_every_steps", None) is not None:
        mixins.append(GradualUnfreezing)  # before LayerwiseRates: it widens what that one groups
    if recipe.training.layerwise_lr_decay is not None:
        mixins.append(LayerwiseRates)
    if recipe.sequence_head:
        return type("ClassifierTrainer", (*mixins, Trainer), {})
    weighted = recipe.task == "classification" and recipe.classification.class_weights is not None
    if weighted or not torch.cuda.is_available():  # on a GPU, TRL's fused head already scores only label positions
        mixins.append(LabelOnlyLoss)
    name = "LabelOnlySFTTrainer" if LabelOnlyLoss in mixins else "SFTTrainer"
    return type(name, (*mixins, SFTTrainer), {}) if mixins else SFTTrainer


def _tokenized(recipe: Recipe, tokenizer: Any, splits: Splits, name: str) -> Any:
    """A split as the token sequences the SFTTrainer trains on (data/tokens.py: once, batched, TRL's result), with
    what truncation did to it in the run's notes."""
    from llm_tune.data.tokens import tokenize_sft, truncation_note

    split = getattr(splits, name)
    if split is None:
        return None
    data = recipe.data
    done = tokenize_sft(split, tokenizer, completion_only=not data.train_on_prompt,
                        assistant_only=data.format == "chat" and not data.train_on_prompt, max_length=data.max_length,
                        packing=recipe.training.packing, cut_prompt=_classifier_cut(recipe, tokenizer, splits))  # fmt: skip
    splits.lengths[name] = done.lengths
    if len(done.dataset) == 0:
        where = (data.train_label if name == "train" else data.validation_label) or "data.validation_fraction"
        raise UserError(f"{where}: no row keeps a trained token after truncation; raise data.max_length")
    if note := truncation_note(name, done, data.max_length):
        splits.notes.append(note)
    return done.dataset


def _stream(recipe: Recipe, tokenizer: Any, args: Any) -> Any:
    """data.streaming: the training rows tokenized as they are read, in the order of (seed, global batch)."""
    from llm_tune.data.stream import streamed_train

    t = recipe.training
    global_batch = t.per_device_train_batch_size * t.gradient_accumulation_steps * args.world_size
    return streamed_train(recipe.data, tokenizer, t.seed, global_batch, grouped=t.group_by_length)


def _classifier_cut(recipe: Recipe, tokenizer: Any, splits: Splits) -> Any:
    """A generate-head classifier's prompt cut (the end stays, room left for the longest answer), so that training
    reads a long prompt as eval and predict score it; None for SFT, which keeps TRL's cut."""
    if not recipe.is_classification:
        return None
    from functools import partial

    from llm_tune.classification.heads import cut_for_classifier, label_token_ids

    answer = max((len(ids) for ids in label_token_ids(tokenizer, splits.labels or [])), default=0)
    return partial(cut_for_classifier, max_length=recipe.data.max_length, answer=answer)


def _classifier_trainer(recipe: Recipe, model: Any, tokenizer: Any, splits: Splits, args: Any) -> Trainer:
    from transformers import DataCollatorWithPadding

    from llm_tune.classification.heads import encode_for_classifier
    from llm_tune.classification.problems import training_target
    from llm_tune.classification.weights import weighted_cross_entropy
    from llm_tune.data.mixture import SOURCE
    from llm_tune.data.tokens import over_length_note

    encode = encode_for_classifier(tokenizer, splits.labels, recipe.data.max_length, training_target(recipe))
    weights = recipe.classification.class_weights
    encoded = {}
    for name in ("train", "validation"):
        split = getattr(splits, name)
        if split is None:
            continue
        text = [c for c in split.column_names if c != SOURCE]  # a mixture's source index stays with its row
        done = split.map(encode, batched=True, remove_columns=text, desc="Tokenizing")
        splits.lengths[name] = done["length"]
        if over := sum(n > recipe.data.max_length for n in splits.lengths[name]):
            splits.notes.append(over_length_note(name, over, len(done), recipe.data.max_length))
        encoded[name] = done.remove_columns("length")
    train, validation = encoded["train"], encoded.get("validation")
    return trainer_class(recipe)(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_loss_func=weighted_cross_entropy([weights[label] for label in splits.labels]) if weights else None,
    )


def _answer_token_weight(recipe: Recipe, tokenizer: Any, train: Any) -> Any:
    """[vocab] class weight by first answer token (1 elsewhere), checked against the tokenized training rows."""
    import torch

    from llm_tune.classification.heads import label_token_ids
    from llm_tune.classification.weights import answer_token_weights

    labels = recipe.classification.labels
    observed = {next(t for t in row if t != -100) for row in train["labels"] if any(t != -100 for t in row)}
    first = [ids[0] for ids in label_token_ids(tokenizer, labels)]
    by_token = answer_token_weights(observed, first, labels, recipe.classification.class_weights)
    weight = torch.ones(len(tokenizer))
    weight[list(by_token)] = torch.tensor(list(by_token.values()))
    return weight
