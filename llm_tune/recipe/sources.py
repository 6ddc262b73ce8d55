"""What a recipe's paths name: a model source (folder, .gguf file or Hub id) and data files by their type.
Torch-free, so that `validate` can check them in a fraction of a second."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Data file suffixes and the `datasets` builder that reads each.
DATA_LOADERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# Where `make model` writes the embedded default model.
DEFAULT_MODEL_FOLDER = "models/SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class ModelSource:
    """Where from_pretrained reads: a folder or Hub id, plus the GGUF file name inside it if any."""

    folder: str
    gguf_file: str | None = None

    @classmethod
    def parse(cls, name_or_path: str) -> ModelSource:
        path = Path(name_or_path)
        if path.suffix == ".gguf":
            return cls(str(path.parent), path.name)
        return cls(name_or_path)

    @property
    def is_local(self) -> bool:
        return self.gguf_file is not None or Path(self.folder).exists() or self.folder.startswith((".", "/"))

    @property
    def path(self) -> Path:
        """The local file or folder this source names."""
        return Path(self.folder) / self.gguf_file if self.gguf_file else Path(self.folder)

    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}
