"""The doctor's findings, as one typed value between the checks that make it, the text that prints it and the --json
file that stores it (the same names: the JSON keys are the field names)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llm_tune.doctor.checks import Duplicates, LengthStats
from llm_tune.doctor.estimate import Device, MemoryEstimate
from llm_tune.doctor.timing import TimeEstimate


@dataclass(frozen=True)
class SourceCount:
    """One source of data.train or data.validation as a list: its rows and tokens; a training source's weight and
    the rows an epoch takes of it (data/mixture.py)."""

    split: str
    name: str
    rows: int
    tokens: int
    weight: float | None = None
    epoch_rows: int | None = None


@dataclass(frozen=True)
class DoctorReport:
    recipe: str
    model: str
    strategy: str
    task: str
    trainable_params: int
    total_params: int
    device: Device
    tokens: dict[str, LengthStats]  # per split
    trained_tokens: dict[str, Any]  # checks.eos_findings and the rows truncation leaves untrained
    rows: list[dict[str, Any]]  # two rendered training rows, the trained pieces marked
    duplicates: Duplicates
    memory: MemoryEstimate
    time: TimeEstimate | None  # None when no row keeps a trained token
    warnings: list[str]
    errors: list[str]
    labels: dict[str, dict[str, int]] | None = None  # label balance per split, for labelled rows
    launch: dict[str, Any] | None = None  # doctor --launch: the accelerate launch as read, and its global batch
    sources: list[SourceCount] | None = None  # a list of data sources: rows and tokens of each

    def as_json(self) -> dict[str, Any]:
        found = asdict(self)
        for key in ("labels", "launch", "sources"):
            if found[key] is None:
                del found[key]
        for key in ("validation", "train_validation_overlap"):  # no validation rows: nothing to count
            if found["duplicates"][key] is None:
                del found["duplicates"][key]
        return found


@dataclass(frozen=True)
class MeasuredMemory:
    peak_bytes: int
    rows: int  # the longest rows the first step trained on
    tokens: int  # the longest of them: prompt + answer
    how: str


@dataclass(frozen=True)
class PreferenceReport:
    recipe: str
    model: str
    strategy: str
    method: str
    reference: str
    trainable_params: int
    total_params: int
    device: Device
    rows: dict[str, int]  # per split, after the row checks (KTO: unpaired rows)
    notes: list[str]  # what loading did to the rows, counted
    prompt_tokens: dict[str, LengthStats]
    tokens: dict[str, LengthStats]  # prompt + the longer answer
    memory: MeasuredMemory
    time: TimeEstimate
    warnings: list[str]
    errors: list[str]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def publish(lines: list[str], found: dict[str, Any], json_path: Path | None, errors: list[str]) -> None:
    """Print a report's lines, write its JSON (`doctor --json`), and stop with the problems it found, if any."""
    from llm_tune.errors import UserError
    from llm_tune.run_folder import write_json

    print("\n".join(lines), flush=True)
    if json_path is not None:
        write_json(json_path, found)
    if errors:
        raise UserError(*errors)
