"""The run folder: one class that knows every path of a run, which of its checkpoints are complete, and atomic
writes. Only the main process writes; each file is written whole or not at all."""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_tune.console import is_main_process
from llm_tune.errors import UserError
from llm_tune.recipe.loading import load_recipe, resolved_yaml
from llm_tune.recipe.schema import Recipe

# The Trainer writes a checkpoint file by file, so a process killed mid-save leaves a folder that looks like a
# checkpoint but is not one. A checkpoint counts as complete only once it holds COMPLETE, written last (after every
# rank has finished its part), listing each file's size so a truncated file is caught too. (transformers'
# get_last_checkpoint takes the highest checkpoint-N folder, complete or not: the very case this marker is for.)
COMPLETE = "llm_tune-complete.json"
MANIFEST = "export.json"  # written last into an export folder: its presence is what marks the export complete
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # the Trainer's folder names (transformers' _re_checkpoint)


@dataclass(frozen=True)
class RunFolder:
    """OUTPUT_DIR of one run: what training writes there and where exports and evaluations go."""

    root: Path

    @property
    def recipe_file(self) -> Path:
        return self.root / "recipe.resolved.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def trainer_state(self) -> Path:
        return self.root / "trainer_state.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def environment(self) -> Path:
        """Library versions, device and dtype, recorded when training starts."""
        return self.root / "environment.json"

    @property
    def samples(self) -> Path:
        """A few greedy generations of an SFT run, made at the end of training for the report."""
        return self.root / "samples.jsonl"

    @property
    def report_page(self) -> Path:
        return self.root / "report.html"

    @property
    def report_plots(self) -> Path:
        return self.root / "report"

    def latest_checkpoint(self) -> Path | None:
        """The complete checkpoint of the highest step, or None."""
        return latest_complete(self.checkpoints)

    def weights(self, recipe: Recipe) -> Path:
        """adapter/ for lora and qlora, model/ for full and frozen."""
        return self.root / ("adapter" if recipe.adapter else "model")

    def export(self, merged: bool) -> Path:
        return self.root / "export" / ("merged" if merged else "adapter")

    @property
    def gguf_export(self) -> Path:
        """Where `export --format gguf` puts its .gguf file, model card and reports."""
        return self.root / "export" / "gguf"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Held by the main process while a run lives, on a file beside the folder (the folder itself may be
        replaced); the kernel releases it when the process ends, killed or not. The file goes when the run ends."""
        if not is_main_process():
            yield
            return
        path = self.root.parent / f".{self.root.name}.lock"
        made_parent = not path.parent.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a+", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # A run that ended between our open and flock has unlinked the file we hold: look again.
                held = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
            except (BlockingIOError, FileNotFoundError):
                held = False
            if not held:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise UserError(
                    f"output_dir: {self.root} is in use by a live run ({holder}); wait for it to finish, or choose"
                    " another output_dir"
                )
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            try:
                yield
            finally:
                path.unlink(missing_ok=True)
                if made_parent and not any(path.parent.iterdir()):
                    path.parent.rmdir()  # a run that failed on its input leaves nothing behind

    def is_run(self) -> bool:
        return self.recipe_file.is_file()

    def read_recipe(self) -> Recipe:
        if not self.is_run():
            raise UserError(f"{self.root}: not a run folder (no {self.recipe_file.name}); give the output_dir of a run")
        return load_recipe(self.recipe_file)

    def write_recipe(self, recipe: Recipe) -> None:
        write_text_atomic(self.recipe_file, resolved_yaml(recipe))

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.metrics, metrics)


def checkpoint_folders(checkpoints: Path) -> list[Path]:
    """checkpoint-N folders, lowest step first, complete or not."""
    if not checkpoints.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in checkpoints.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found)]


def is_complete(folder: Path) -> bool:
    """The folder holds COMPLETE and every file it lists, at the size it lists."""
    try:
        sizes = read_json(folder / COMPLETE)["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((folder / name).is_file() and (folder / name).stat().st_size == size for name, size in sizes.items())


def latest_complete(checkpoints: Path) -> Path | None:
    complete = [p for p in checkpoint_folders(checkpoints) if is_complete(p)]
    return complete[-1] if complete else None


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; a run's files are shared like any other
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
