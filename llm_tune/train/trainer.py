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
    label_rows: Any = None,
) -> Trainer:
    """The configured trainer; `args` from training_arguments (made here when not given); `label_rows`: a
    classifier's validation rows, scored as `eval` scores them (train/monitor.py)."""
    import torch
    from transformers import DataCollatorWithPadding

    from llm_tune.train.monitor import watch_callbacks
    from llm_tune.train.trainers import ClassifierTrainer, LanguageModelTrainer

    if args is None:
        args = training_arguments(recipe, run, splits.validation is not None)
    if recipe.training.report_to == "tensorboard":
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run.logs)
    every = getattr(recipe.strategy, "unfreeze_every_steps", None)
    state: dict[str, Any] = dict(
        label_rows=label_rows,
        layerwise_lr_decay=recipe.training.layerwise_lr_decay,
        unfreeze=(recipe.strategy.trainable_layers, every) if every is not None else None,
    )
    if recipe.sequence_head:
        train, validation, loss = _classifier_datasets(recipe, tokenizer, splits)
        state.update(_mixture(recipe, splits, train, validation))
        trainer = ClassifierTrainer(model=model, args=args, train_dataset=train, eval_dataset=validation,
                                    processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
                                    compute_loss_func=loss, **state)  # fmt: skip
    else:
        streamed = recipe.data.streaming
        train = _stream(recipe, tokenizer, args) if streamed else _tokenized(recipe, tokenizer, splits, "train")
        validation = _tokenized(recipe, tokenizer, splits, "validation")
        state.update(_mixture(recipe, splits, train, validation))
        weighted = recipe.classification.class_weights is not None  # single-label classifiers only (tasks/keys.py)
        # On a GPU, TRL's fused head already scores only the label positions.
        trainer = LanguageModelTrainer(model=model, args=args, train_dataset=train, eval_dataset=validation,
                                       processing_class=tokenizer, label_only=not torch.cuda.is_available(),
                                       token_weight=_answer_token_weight(recipe, tokenizer, train) if weighted else None,
                                       **state)  # fmt: skip
    for callback in watch_callbacks(recipe.training):
        trainer.add_callback(callback)
    return trainer


def _mixture(recipe: Recipe, splits: Splits, train: Any, validation: Any) -> dict[str, Any]:
    """A list of sources: the training order draws each epoch's rows by the weights (train/order.py), and each
    validation source is also evaluated on its own (train/sources.py); the shares go into the run's notes."""
    from llm_tune.data.mixture import SOURCE, epoch_shares

    names, state = splits.source_names, {}
    if "train" in names:
        data = recipe.data
        weights = [source.weight for source in data.train_sources]
        lengths = [len(ids) for ids in train["input_ids"]]
        mixture = epoch_shares(names["train"], weights, lengths, train[SOURCE], data.mix_by)
        if empty := [i for i, share in enumerate(mixture) if share.rows == 0]:
            raise UserError(*(f"data.train[{i}] ({data.train_sources[i].path}): no row keeps a trained token after"
                              " truncation; raise data.max_length or drop the source" for i in empty))  # fmt: skip
        splits.notes += [share.line(data.mix_by) for share in mixture]
        state["mixture"] = mixture
    if "validation" in names and validation is not None:
        state["validation_sources"] = names["validation"]
    return state


def _tokenized(recipe: Recipe, tokenizer: Any, splits: Splits, name: str) -> Any:
    """A split as the token sequences the SFTTrainer trains on (data/tokens.py: once, batched, TRL's result), with
    what truncation did to it in the run's notes."""
    from llm_tune.data.tokens import tokenize_sft, truncation_note

    split = getattr(splits, name)
    if split is None:
        return None
    data = recipe.data
    done = tokenize_sft(split, tokenizer, completion_only=not data.train_on_prompt,
                        assistant_only=data.assistant_only, max_length=data.max_length,
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


def _classifier_datasets(recipe: Recipe, tokenizer: Any, splits: Splits) -> tuple[Any, Any, Any]:
    """The sequence head's encoded train and validation rows, and its loss (class weights) or None."""
    from llm_tune.classification.heads import encode_for_classifier
    from llm_tune.classification.problems import problem_of
    from llm_tune.classification.weights import weighted_cross_entropy
    from llm_tune.data.mixture import SOURCE
    from llm_tune.data.tokens import over_length_note

    target = problem_of(recipe).training_target(recipe.classification)
    encode = encode_for_classifier(tokenizer, splits.labels, recipe.data.max_length, target)
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
    loss = weighted_cross_entropy([weights[label] for label in splits.labels]) if weights else None
    return encoded["train"], encoded.get("validation"), loss


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
