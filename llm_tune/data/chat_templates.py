"""Training chat templates: the stock template with `{% generation %}` markers added, so that TRL can
mask everything but the assistant turns. Each shipped `NAME_training.jinja` renders byte-identically to
its stock `NAME.jinja` (tested); a model is matched by its stock template's exact text, then TRL's own
list of known templates is asked."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from llm_tune.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TEMPLATES = Path(__file__).parent / "templates"


def training_chat_template(tokenizer: PreTrainedTokenizerBase, override: str | None = None) -> str | None:
    """The template to train chats with, or None when no template with markers is known for this model."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if override:
        text = Path(override).read_text(encoding="utf-8")
        if not has_generation_markers(text):
            raise UserError(f"data.chat_template: {override} has no {{% generation %}} markers")
        return text
    stock = tokenizer.chat_template
    if not isinstance(stock, str):
        return None
    if has_generation_markers(stock):
        return stock
    for training in sorted(TEMPLATES.glob("*_training.jinja")):
        original = training.with_name(training.name.replace("_training", ""))
        if original.read_text(encoding="utf-8") == stock:
            return training.read_text(encoding="utf-8")
    try:
        return get_training_chat_template(tokenizer)
    except ValueError:
        return None
