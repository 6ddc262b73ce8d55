"""The recipe's data section: where rows come from (one file, or several sources mixed by weight) and how they are
read. Torch-free, like the rest of recipe/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from llm_tune.recipe.section import Section


class FieldNames(Section):
    """Which column of the data holds what; defaults follow the common dataset layouts."""

    instruction: str = Field("instruction", description="alpaca: the instruction column")
    input: str = Field("input", description="alpaca: the optional input column, appended to the instruction")
    output: str = Field("output", description="alpaca: the answer column")
    messages: str = Field("messages", description="chat: the column holding [{role, content}, ...]")
    text: str = Field("text", description="completion and classification: the text column")
    label: str = Field("label", description="classification: the label column")
    labels: str = Field(
        "labels",
        description="multi_label: the column of each row's labels: a list, or one string split on data.label_separator",
    )
    score: str = Field("score", description="regression: the column of each row's target number")
    text_pair: str | None = Field(
        None,
        description="classification, multi_label, regression: the second text of a text pair (STS-B, NLI, QQP);"
        " data.prompt must then place it with {text_pair}; null: one text per row",
    )


class DataSource(Section):
    """One source of a mixture: a file (or Hub dataset), its weight in the mix, and the name its metrics carry."""

    path: str = Field(description="a .jsonl, .json, .csv or .parquet file, or a Hub dataset name")
    weight: float = Field(
        1.0, gt=0, description="data.train: this source's share of each epoch, relative to the other sources' weights"
    )
    name: str | None = Field(
        None,
        description="the source's name in counts and metrics (eval_NAME_loss); letters, digits, _ and -; null: the"
        " file's name without its suffix",
    )

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        stem = Path(self.path).stem if Path(self.path).suffix else self.path.rstrip("/").split("/")[-1]
        return re.sub(r"[^A-Za-z0-9_-]+", "_", stem)


Sources = str | list[DataSource]


class DataConfig(Section):
    train: Sources = Field(
        description="training rows: a .jsonl, .json, .csv or .parquet file, or a Hub dataset name; or a list of"
        " sources [{path, weight, name}] mixed by weight (see data.mix_by)"
    )
    validation: Sources | None = Field(
        None,
        description="validation rows, in the same format as train; a list of sources [{path, name}] is evaluated"
        " together (eval_loss) and each on its own (eval_NAME_loss)",
    )
    mix_by: Literal["rows", "tokens"] = Field(
        "rows",
        description="a mixture's weights are shares of every epoch: rows: of its rows; tokens: of its tokens. An"
        " epoch holds as many rows (tokens) as all sources together; a source whose share is more than it has is"
        " repeated whole and the rest drawn, a smaller share is drawn; each epoch draws afresh, seeded by"
        " training.seed and the epoch (a resumed run draws the same)",
    )
    streaming: bool = Field(
        False,
        description="read data.train as it trains instead of loading it whole (a file larger than memory): rows are"
        " checked, rendered and tokenized as they stream, the first 1,000 before anything is written; the file is"
        " read in passes, each shuffled through a buffer of data.shuffle_buffer rows seeded by training.seed and"
        " the pass, until training.max_steps (required); a resumed run reads the same order and skips the rows it"
        " trained. One .jsonl, .csv or .parquet file (or Hub dataset) of alpaca, chat or completion rows",
    )
    shuffle_buffer: int = Field(
        10_000,
        gt=0,
        description="data.streaming: rows held in memory to shuffle the stream (each row leaves the buffer at a"
        " random place as the next one enters); larger shuffles better and holds more",
    )
    validation_fraction: float | None = Field(
        None, gt=0.0, lt=1.0, description="carve this fraction out of train for validation (instead of a file)"
    )
    validation_seed: int = Field(0, description="seed of the shuffle that carves validation_fraction out of train")
    format: Literal["alpaca", "chat", "completion", "classification", "multi_label", "regression", "preference"] = (
        Field(
            "alpaca",
            description="how rows are read: alpaca, chat, completion (raw text), classification (one label a"
            " row), multi_label (a list of labels a row; sigmoid outputs, sequence head) or regression (a number a row;"
            " one output, sequence head), the last three with task: classification; or preference ({prompt, chosen,"
            " rejected} pairs, implicit-prompt conversation pairs, or {prompt, completion, label} for KTO; TRL's names)",
        )
    )
    fields: FieldNames = Field(FieldNames(), description="column names, when they differ from the defaults")
    max_length: int = Field(1024, gt=0, description="tokens per row; longer rows are truncated (and counted)")
    train_on_prompt: bool = Field(False, description="false: loss on the completion / assistant turns only")
    skip_bad_rows: bool = Field(False, description="false: an empty or incomplete row stops the run, naming it")
    system_prompt: str | None = Field(
        None,
        description="a system message for every row; null keeps the template's default one; '' an empty system"
        " turn (the fewest tokens per row)",
    )
    chat_template: str | None = Field(
        None, description="a .jinja chat template with {% generation %} markers, for chat models llm_tune does not know"
    )
    prompt: str = Field(
        "Classify the text as one of: {labels}.\n\nText: {text}",
        description="classification: the instruction a text is wrapped in; {text}, {labels} and (with"
        " fields.text_pair) {text_pair} are filled in",
    )
    label_separator: str = Field(
        ",",
        min_length=1,
        description="multi_label: a labels column holding one string is split on this (each part"
        " stripped), e.g. 'joy,love'",
    )

    @property
    def labelled(self) -> bool:
        """Rows carry a target for a classifier: a label, labels or a number (formats classification, multi_label,
        regression)."""
        return self.format in ("classification", "multi_label", "regression")

    @property
    def assistant_only(self) -> bool:
        """Chat rows train on the assistant turns only: the chat template needs {% generation %} markers."""
        return self.format == "chat" and not self.train_on_prompt

    @property
    def train_sources(self) -> list[DataSource]:
        return _as_sources(self.train)

    @property
    def validation_sources(self) -> list[DataSource]:
        return _as_sources(self.validation) if self.validation is not None else []

    @property
    def mixed(self) -> bool:
        """Training rows come as a list of sources (even a list of one): the mixture's sampler orders them."""
        return isinstance(self.train, list)

    @property
    def train_label(self) -> str:
        """How messages and the report name the training rows."""
        return describe(self.train)

    @property
    def validation_label(self) -> str | None:
        return describe(self.validation) if self.validation is not None else None

    @model_validator(mode="after")
    def _one_validation_source(self) -> DataConfig:
        if self.validation and self.validation_fraction:
            raise ValueError("set data.validation or data.validation_fraction, not both")
        for key, value in (("train", self.train), ("validation", self.validation)):
            if isinstance(value, list):
                _check_names(key, value)
        if len(self.train_sources) == 1 and (self.train_sources[0].weight != 1.0 or self.mix_by != "rows"):
            given = "a weight" if self.train_sources[0].weight != 1.0 else f"mix_by {self.mix_by}"
            raise ValueError(
                f"train: {given} with one source does nothing (weights share an epoch between several sources);"
                " list two or more sources, or drop it"
            )
        weighted = [s.label for s in self.validation_sources if s.weight != 1.0]
        if isinstance(self.validation, list) and weighted:
            raise ValueError(
                f"validation: weight given for {', '.join(weighted)}; weights mix training rows (data.train),"
                " every validation row counts once"
            )
        return self


def _as_sources(value: Sources) -> list[DataSource]:
    return [DataSource(path=value)] if isinstance(value, str) else list(value)


def describe(value: Sources) -> str:
    if isinstance(value, str):
        return value
    return ", ".join(f"{s.path} (weight {s.weight:g})" if len(value) > 1 else s.path for s in value)


def _check_names(key: str, sources: list[DataSource]) -> None:
    if not sources:
        raise ValueError(f"{key}: an empty list of sources; give at least one {{path: FILE}}")
    for source in sources:
        if source.name is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", source.name):
            raise ValueError(f"{key}: name {source.name!r} for {source.path}: use letters, digits, _ and -")
    labels = [s.label for s in sources]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(
            f"{key}: two sources are named {repeated[0]!r} ({', '.join(s.path for s in sources if s.label == repeated[0])});"
            " give each a name: {path: ..., name: ...}"
        )
