"""A trained model on disk: a directory with ``manifest.json`` plus weight files, no pickles.

The manifest names every file with its sha256, the tasks with their labels and thresholds, the
metrics, the training data hashes and the library versions; `read_manifest` refuses anything that
does not match, so a half-copied or hand-edited model never gets served.
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model.errors import ArtifactError
from model.tasks import LABELS, Task

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[str]
    threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Binary tasks: probability of the positive label at or above which it is chosen.",
    )
    temperature: float = Field(
        default=1.0, gt=0.0, description="Logits are divided by it (calibration)."
    )
    bias: list[float] | None = Field(
        default=None,
        description="Per-label offsets added to the scaled logits (calibration), one per label.",
    )

    @model_validator(mode="after")
    def _bias_fits_labels(self) -> TaskSpec:
        if self.bias is not None and len(self.bias) != len(self.labels):
            raise ValueError(f"bias has {len(self.bias)} values for {len(self.labels)} labels")
        return self


class BaseEncoder(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    sha256: str = Field(
        description="sha256 of the encoder's model.safetensors the adapters were trained on."
    )


class OnnxSpec(BaseModel):
    """The int8 ONNX export of a transformer model, served without torch or transformers."""

    model_config = ConfigDict(extra="forbid")

    file: str
    tokenizer_sha256: str = Field(
        description="sha256 of the pinned encoder's tokenizer.json the inputs come from."
    )
    quantization: str
    max_length: int = Field(ge=1)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: int
    name: str
    version: str
    kind: Literal["tfidf-linear", "transformer-lora"]
    created: str
    tasks: dict[Task, TaskSpec]
    files: dict[str, str] = Field(description="File name -> sha256 of its bytes.")
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    training_data: dict[str, str] = Field(default_factory=dict)
    library_versions: dict[str, str] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    base_encoder: BaseEncoder | None = None
    network: dict[str, float | int] | None = None
    onnx: OnnxSpec | None = None

    @model_validator(mode="after")
    def _labels_match_tasks(self) -> Manifest:
        if self.format_version != FORMAT_VERSION:
            raise ValueError(
                f"format_version {self.format_version} (this code reads {FORMAT_VERSION})"
            )
        for task, spec in self.tasks.items():
            if tuple(spec.labels) != LABELS[task]:
                raise ValueError(
                    f"task {task}: labels {spec.labels} != expected {list(LABELS[task])}"
                )
            if spec.threshold is not None and len(spec.labels) != 2:
                raise ValueError(f"task {task}: a threshold only applies to a binary task")
        if self.kind == "transformer-lora" and (self.base_encoder is None or self.network is None):
            raise ValueError("a transformer-lora model needs base_encoder and network")
        if self.onnx is not None and self.onnx.file not in self.files:
            raise ValueError("the onnx model must be listed in files")
        return self

    def thresholds(self) -> dict[Task, float | None]:
        return {task: spec.threshold for task, spec in self.tasks.items()}


def library_versions(*libraries: str) -> dict[str, str]:
    """Python's and each named distribution's version, recorded in every manifest."""
    return {"python": platform.python_version(), **{lib: version(lib) for lib in libraries}}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: Path) -> Manifest:
    """Read and fully validate a model directory's manifest, including every file's checksum."""
    if not directory.is_dir():
        raise ArtifactError(f"model directory {directory} does not exist")
    path = directory / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{directory} has no {MANIFEST}: not a commentdesk model")
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
    except ValidationError as exc:
        raise ArtifactError(f"{path} is invalid: {exc}") from exc
    for name, expected in manifest.files.items():
        file = directory / name
        if Path(name).name != name or not file.is_file():
            raise ArtifactError(f"{directory} is incomplete: {name} is missing")
        if sha256_file(file) != expected:
            raise ArtifactError(f"{file} does not match the sha256 in its manifest")
    return manifest


def write_manifest(directory: Path, manifest: Manifest) -> None:
    (directory / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
