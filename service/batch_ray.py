"""Batch scoring on Ray Data: a pool of actors, each holding the model, scores windows of chunks.

Reading, validation and writing stay in ``service.batch`` (so bad rows, resuming and the output
are the same as with the local engine); Ray Data spreads the expensive part, the model, with
``map_batches`` over an actor pool, on a local Ray or a cluster (``address``). Optional extra:
``pip install '.[ray]'``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from model.scorer import Runtime, Scores, load_scorer
from model.tasks import LABELS, Task

logger = logging.getLogger(__name__)


class ScoreBatch:
    """One actor of the pool: loads the model once, then scores every batch it is given."""

    def __init__(self, model_dir: str, runtime: Runtime, threads: int):
        self.scorer = load_scorer(Path(model_dir), runtime=runtime, threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One column per task's labels and per label's probabilities (float64, exact)."""
        scores = self.scorer.score([str(text) for text in batch["text"]])
        columns = {}
        for task, labels in scores.labels.items():
            columns[f"label.{task.value}"] = labels
            for k, label in enumerate(LABELS[task]):
                columns[f"score.{task.value}.{label}"] = scores.probabilities[task][:, k]
        return columns


def _scores_of(columns: dict[str, np.ndarray]) -> Scores:
    tasks = [Task(name.removeprefix("label.")) for name in columns if name.startswith("label.")]
    return Scores(
        {task: columns[f"label.{task.value}"] for task in tasks},
        {
            task: np.stack([columns[f"score.{task.value}.{label}"] for label in LABELS[task]], 1)
            for task in tasks
        },
    )


class RayEngine:
    def __init__(
        self,
        model_dir: Path,
        address: str | None = None,
        workers: int = 2,
        runtime: Runtime = "onnx",
        threads_per_worker: int = 1,
        window_rows: int = 50_000,
        batch_rows: int = 512,
    ):
        import ray

        if not ray.is_initialized():
            options: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "logging_level": logging.WARNING,
            }
            if address is None:  # a local Ray sized for this machine
                options["object_store_memory"] = 256 * 1024 * 1024
            ray.init(address=address, **options)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        self.model_dir = str(Path(model_dir).resolve())
        self.workers = workers
        self.runtime = runtime
        self.threads = threads_per_worker
        self.window_rows = window_rows
        self.batch_rows = batch_rows

    def score(self, chunks: Iterator[list[str]]) -> Iterator[Scores]:
        """Chunks gathered into windows of about ``window_rows`` rows, one Ray Data pass each."""
        window: list[list[str]] = []
        for texts in chunks:
            window.append(texts)
            if sum(len(t) for t in window) >= self.window_rows:
                yield from self._score_window(window)
                window = []
        if window:
            yield from self._score_window(window)

    def _score_window(self, window: list[list[str]]) -> Iterator[Scores]:
        import ray

        flat = [text for texts in window for text in texts]
        if not flat:
            yield from (Scores.empty([]) for _ in window)
            return
        dataset = ray.data.from_items([{"text": text} for text in flat]).map_batches(
            ScoreBatch,
            fn_constructor_kwargs={
                "model_dir": self.model_dir,
                "runtime": self.runtime,
                "threads": self.threads,
            },
            concurrency=self.workers,
            batch_size=self.batch_rows,
            num_cpus=self.threads,
        )
        batches: list[dict[str, np.ndarray]] = list(
            dataset.iter_batches(batch_size=None, batch_format="numpy")  # type: ignore[arg-type]
        )
        scores = _scores_of({key: np.concatenate([b[key] for b in batches]) for key in batches[0]})
        if len(scores) != len(flat):
            raise RuntimeError(f"Ray returned {len(scores)} results for {len(flat)} comments")
        start = 0
        for texts in window:
            yield scores.rows(start, start + len(texts))
            start += len(texts)
