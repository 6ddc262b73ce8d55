"""The four strategies, each a small function over a loaded model: which weights train."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llm_tune.recipe.schema import FrozenStrategy, FullStrategy, LoraStrategy, QLoraStrategy, Strategy

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

# Modules a sequence classifier adds on top of the base; they always train.
HEAD_MODULES = ("score", "classifier")


def apply_strategy(model: PreTrainedModel, strategy: Strategy, *, classifier: bool, gradient_checkpointing: bool):
    """The model ready to train: all weights, the last blocks, or a LoRA adapter (over a 4-bit base for qlora)."""
    if isinstance(strategy, FullStrategy):
        model.requires_grad_(True)
        return model
    if isinstance(strategy, FrozenStrategy):
        return freeze_all_but_last(model, strategy.trainable_layers, strategy.trainable_modules)
    return add_lora(model, strategy, classifier=classifier, gradient_checkpointing=gradient_checkpointing)


def transformer_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder's stack of blocks: the longest ModuleList in the model."""
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no stack of transformer blocks")
    return max(lists, key=len)


def freeze_all_but_last(model: PreTrainedModel, layers: int, modules: list[str]):
    model.requires_grad_(False)
    blocks = transformer_blocks(model)
    for block in blocks[len(blocks) - layers :]:  # layers == 0: none (a linear probe); [-0:] would be all
        block.requires_grad_(True)
    wanted = set(modules) | set(HEAD_MODULES)
    for name, module in model.named_modules():
        if name.split(".")[-1] in wanted:
            module.requires_grad_(True)
    return model


def add_lora(model: PreTrainedModel, strategy: LoraStrategy, *, classifier: bool, gradient_checkpointing: bool):
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    if isinstance(strategy, QLoraStrategy):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS if classifier else TaskType.CAUSAL_LM,
        r=strategy.r,
        lora_alpha=strategy.lora_alpha,
        lora_dropout=strategy.lora_dropout,
        target_modules=_target_modules(model, strategy),
        use_dora=strategy.use_dora,
        use_rslora=strategy.use_rslora,
        layers_to_transform=strategy.layers_to_transform,
        # SEQ_CLS already trains the new head in full and saves it with the adapter (modules_to_save).
    )
    model = get_peft_model(model, config)
    if isinstance(strategy, QLoraStrategy):
        from llm_tune.model.loading import shards_parameters

        if shards_parameters():
            in_storage_dtype(model)
    return model


def in_storage_dtype(model: PreTrainedModel) -> None:
    """FSDP2 and ZeRO-3 flatten a unit's weights into one buffer of one dtype, and the 4-bit weights are stored in
    bnb_4bit_quant_storage: the LoRA weights, norms and embeddings (which prepare_model_for_kbit_training upcast
    to float32) go to that dtype too, or sharding stops on mixed dtypes."""
    import torch

    storage = (
        model.config.quantization_config["bnb_4bit_quant_storage"]
        if isinstance(model.config.quantization_config, dict)
        else model.config.quantization_config.bnb_4bit_quant_storage
    )
    storage = getattr(torch, storage) if isinstance(storage, str) else storage
    for param in model.parameters():
        if param.dtype.is_floating_point and param.dtype != storage:
            param.data = param.data.to(storage)


def _target_modules(model: PreTrainedModel, strategy: LoraStrategy) -> str | list[str]:
    """peft takes "all-linear" only for every block; for some blocks, name the blocks' linear layers."""
    import torch

    if strategy.target_modules != "all-linear" or strategy.layers_to_transform is None:
        return strategy.target_modules
    block = transformer_blocks(model)[0]
    return sorted({name.split(".")[-1] for name, m in block.named_modules() if isinstance(m, torch.nn.Linear)})


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters. A PEFT model counts itself: peft knows that a 4-bit weight packs two values
    per byte of its storage dtype (and ZeRO-3's ds_numel), so QLoRA totals are the real parameter count."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    # Under ZeRO-3 a parameter is an empty placeholder on this rank; ds_numel is its whole size.
    sizes = [(getattr(p, "ds_numel", None) or p.numel(), p.requires_grad) for p in model.parameters()]
    return sum(n for n, trains in sizes if trains), sum(n for n, _ in sizes)
