"""The one interface every runtime implements: score a batch of comments for all tasks at once."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np

from model.artifact import Manifest, TaskSpec, read_manifest
from model.encoder import BASE_ENCODER_SHA256
from model.errors import ArtifactError, InvalidTextError
from model.tasks import LABELS, Task
from model.text import UNPAIRED_SURROGATE

if TYPE_CHECKING:  # scikit-learn and SciPy cost ~150 MB and 1 s: imported only to serve one
    from model.linear import TfidfLinearModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    labels: dict[Task, str]
    scores: dict[Task, dict[str, float]]


@dataclass(frozen=True)
class Scores:
    """A batch's labels (str arrays) and probabilities (rows x labels) per task, one row per
    text: bulk consumers (batch scoring) read these without building a dict per comment."""

    labels: dict[Task, np.ndarray]
    probabilities: dict[Task, np.ndarray]

    @classmethod
    def decided(
        cls, probabilities: dict[Task, np.ndarray], thresholds: Mapping[Task, float | None]
    ) -> Scores:
        return cls(
            {task: decide_rows(task, p, thresholds.get(task)) for task, p in probabilities.items()},
            probabilities,
        )

    @classmethod
    def empty(cls, tasks: Sequence[Task]) -> Scores:
        return cls(
            {task: np.array([], dtype=object) for task in tasks},
            {task: np.zeros((0, len(LABELS[task]))) for task in tasks},
        )

    def __len__(self) -> int:
        return len(next(iter(self.labels.values()), ()))

    def rows(self, start: int, stop: int) -> Scores:
        return Scores(
            {task: labels[start:stop] for task, labels in self.labels.items()},
            {task: p[start:stop] for task, p in self.probabilities.items()},
        )

    def predictions(self) -> list[Prediction]:
        tasks = list(self.labels)
        labels = [self.labels[task].tolist() for task in tasks]
        values = [self.probabilities[task].tolist() for task in tasks]
        return [
            Prediction(
                labels={task: labels[t][row] for t, task in enumerate(tasks)},
                scores={
                    task: dict(zip(LABELS[task], values[t][row], strict=True))
                    for t, task in enumerate(tasks)
                },
            )
            for row in range(len(self))
        ]


class Predictor(Protocol):
    """What per-comment callers need: the model's name and version, and ``predict``."""

    name: str
    version: str

    def predict(self, texts: Sequence[str]) -> list[Prediction]: ...


class Scorer(Predictor, Protocol):
    tasks: tuple[Task, ...]

    def score(self, texts: Sequence[str]) -> Scores: ...


class ArrayScorer(ABC):
    """Base of the real scorers: ``score`` computes arrays, ``predict`` is its per-comment view."""

    name: str
    version: str
    tasks: tuple[Task, ...]

    @abstractmethod
    def score(self, texts: Sequence[str]) -> Scores: ...

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        return self.score(texts).predictions()


@runtime_checkable
class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length row per text."""
        ...


Runtime = Literal["onnx", "torch"]


def check_text(text: object, max_chars: int) -> str:
    """Reject what cannot be scored, with a message that names the problem."""
    if not isinstance(text, str):
        raise InvalidTextError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidTextError("text is empty or only whitespace")
    if len(text) > max_chars:
        raise InvalidTextError(f"text has {len(text)} characters; the limit is {max_chars}")
    if (found := UNPAIRED_SURROGATE.search(text)) is not None:
        raise InvalidTextError(
            f"text is not valid Unicode: an unpaired surrogate U+{ord(found.group()):04X} at "
            f"character {found.start()} (half of a cut emoji?)"
        )
    return text


def softmax(
    logits: np.ndarray, temperature: float = 1.0, bias: Sequence[float] | None = None
) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature + bias`` in float64 (shared by calibration and
    both runtimes, so all turn logits into the same probabilities)."""
    scaled = logits.astype(np.float64) / temperature
    if bias is not None:
        scaled = scaled + np.asarray(bias, dtype=np.float64)
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    result: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return result


def calibrated(logits: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """A task's probabilities as its manifest says: temperature, then any per-label bias."""
    return softmax(logits, spec.temperature, spec.bias)


def recalibrate(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling of probabilities: softmax(log p / T). Served probabilities are
    softmax(z / T0), so this is exactly softmax(z / (T0 * T)) without the logits."""
    return softmax(np.log(np.clip(probabilities, 1e-12, 1.0)), temperature)


def decide_rows(task: Task, probabilities: np.ndarray, threshold: float | None) -> np.ndarray:
    """Each row's label: the positive one at or over a binary task's threshold, else the most
    probable."""
    labels = np.array(LABELS[task], dtype=object)
    chosen: np.ndarray = (
        labels[np.argmax(probabilities, axis=1)]
        if threshold is None
        else np.where(probabilities[:, 1] >= threshold, labels[1], labels[0])
    )
    return chosen


class LinearScorer(ArrayScorer):
    """Scores with a TF-IDF + linear model directory."""

    def __init__(self, model: TfidfLinearModel, manifest: Manifest):
        self.model = model
        self.manifest = manifest
        self.name = manifest.name
        self.version = manifest.version
        self.tasks = tuple(manifest.tasks)

    def score(self, texts: Sequence[str]) -> Scores:
        if not texts:
            return Scores.empty(self.tasks)
        return Scores.decided(self.model.predict_proba(texts), self.manifest.thresholds())


class TransformerScorer(ArrayScorer):
    """Scores with the multi-task MiniLM network: one encoder pass per batch for every task."""

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        encoder_dir: Path | None = None,
        batch_size: int = 64,
    ):
        import torch
        from safetensors.torch import load_file

        from model.encoder import verified_encoder_dir
        from model.transformer import NetworkConfig, build_network, load_tokenizer

        assert manifest.base_encoder is not None and manifest.network is not None
        if encoder_dir is None and manifest.base_encoder.sha256 != BASE_ENCODER_SHA256:
            raise ArtifactError("the model was trained on another base encoder than the pinned one")
        encoder = verified_encoder_dir(encoder_dir, manifest.base_encoder.sha256)
        self.config = NetworkConfig(**manifest.network)  # type: ignore[arg-type]
        self.network = build_network(encoder, list(manifest.tasks), self.config)
        try:
            self.network.load_trainable_state(load_file(directory / "adapters.safetensors"))
        except (ValueError, OSError, RuntimeError) as exc:
            raise ArtifactError(f"{directory}: adapter weights cannot be read: {exc}") from exc
        self.network.eval()
        self.tokenizer = load_tokenizer(encoder)
        self.manifest = manifest
        self.name, self.version = manifest.name, manifest.version
        self.tasks = tuple(manifest.tasks)
        self.batch_size = batch_size
        self._torch = torch

    def score(self, texts: Sequence[str]) -> Scores:
        from model.transformer import encode

        if not texts:
            return Scores.empty(self.tasks)
        order = np.argsort([len(t) for t in texts])
        probabilities = {task: np.zeros((len(texts), len(LABELS[task]))) for task in self.tasks}
        with self._torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                index = order[start : start + self.batch_size]
                batch = encode(self.tokenizer, [texts[i] for i in index], self.config.max_length)
                for task, logits in self.network(**batch).items():
                    spec = self.manifest.tasks[task]
                    probabilities[task][index] = calibrated(logits.double().numpy(), spec)
        return Scores.decided(probabilities, self.manifest.thresholds())


def load_scorer(
    directory: Path, encoder_dir: Path | None = None, runtime: Runtime = "onnx", threads: int = 0
) -> Scorer:
    """Load any supported model directory after validating its manifest.

    A transformer model is served by its int8 ONNX export when ``runtime`` is ``onnx`` and the
    directory has one (no torch imported), otherwise by PyTorch.
    """
    manifest = read_manifest(directory)
    scorer: Scorer
    if manifest.kind == "transformer-lora" and runtime == "onnx" and manifest.onnx is not None:
        from model.onnx_runtime import OnnxScorer

        scorer = OnnxScorer(directory, manifest, encoder_dir, threads=threads)
    elif manifest.kind == "transformer-lora":
        if runtime == "onnx":
            logger.warning("%s has no ONNX export; scoring with PyTorch", directory)
        scorer = TransformerScorer(directory, manifest, encoder_dir)
    else:
        from model.linear import TfidfLinearModel

        scorer = LinearScorer(TfidfLinearModel.load(directory, list(manifest.tasks)), manifest)
    logger.info(
        "loaded model %s %s (%s, %s) from %s",
        manifest.name,
        manifest.version,
        manifest.kind,
        type(scorer).__name__,
        directory,
    )
    return scorer
