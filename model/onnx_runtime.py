"""The int8 ONNX runtime: onnxruntime + the `tokenizers` package, no torch, no transformers.

Comments are tokenised once, sorted by token count and cut into buckets that are padded only to
their own longest comment, so short comments never pay for a long one. One session call per
bucket returns every task's logits and the sentence embedding (used for reply similarity).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from model.artifact import Manifest, sha256_file
from model.encoder import base_encoder_dir
from model.errors import ArtifactError
from model.scorer import ArrayScorer, Scores, calibrated
from model.tasks import Task
from model.text import normalize

logger = logging.getLogger(__name__)

ONNX_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
EMBEDDING_OUTPUT = "embedding"
# What one session call costs beyond its rows, in padded tokens' worth of model work, as
# measured on a 2-core machine by bench/buckets.py (docs/benchmarks.md).
CALL_OVERHEAD_TOKENS = 4.0


def logits_output(task: Task) -> str:
    return f"logits_{task.value}"


def buckets(
    lengths: Sequence[int], max_rows: int, max_tokens: int, overhead_tokens: float = 0.0
) -> list[np.ndarray]:
    """Indices grouped by similar length, at the least cost: each group is padded to its longest
    row and each session call costs ``overhead_tokens`` padded tokens' worth more. At most
    ``max_rows`` rows and ``max_tokens`` padded tokens per group (a single longer row still gets
    its own group).

    Cutting the length-sorted rows into equal runs wastes a fifth of the work on padding for the
    8-16 comments a server call holds; the cheapest cut is found exactly by dynamic programming
    over the sorted order (the best cut of the first ``end`` rows ends in a group of 1 to
    ``max_rows`` rows), linear in the number of rows.
    """
    order = np.argsort(lengths, kind="stable")
    ordered = [int(lengths[i]) for i in order]
    cost = [0.0] + [float("inf")] * len(ordered)
    cut = [0] * (len(ordered) + 1)  # where the last group of the best cut of the first rows starts
    for end in range(1, len(ordered) + 1):
        longest = ordered[end - 1]  # sorted ascending: the group's last row is its longest
        for rows in range(1, min(max_rows, end) + 1):
            if rows > 1 and rows * longest > max_tokens:
                break
            total = cost[end - rows] + rows * longest + overhead_tokens
            if total < cost[end]:
                cost[end], cut[end] = total, end - rows
    groups = []
    end = len(ordered)
    while end:
        groups.append(order[cut[end] : end])
        end = cut[end]
    return groups[::-1]


class OnnxScorer(ArrayScorer):
    """Scores with a transformer model's int8 ONNX export; also embeds comments for replies."""

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        encoder_dir: Path | None = None,
        threads: int = 0,
        max_rows: int = 8,
        max_tokens: int = 4096,
        overhead_tokens: float = CALL_OVERHEAD_TOKENS,
    ):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        spec = manifest.onnx
        if spec is None:
            raise ArtifactError(f"{directory} has no ONNX export (commentdesk export-onnx)")
        tokenizer = (encoder_dir or base_encoder_dir()) / TOKENIZER_FILE
        if not tokenizer.is_file() or sha256_file(tokenizer) != spec.tokenizer_sha256:
            raise ArtifactError(
                f"{tokenizer} is missing or not the tokenizer the model was built on"
            )
        # One single-threaded run per core, in parallel over buckets: on these small matrices it
        # beat one run spread over every core by ~15 % (docs/experiments.md). Each worker has its
        # own session: two runs on one session share its allocator and buffers, and on a 2-core
        # VM that cost up to a quarter of the throughput for tens of seconds at a time, while
        # one thread never slowed down (docs/benchmarks.md).
        workers = threads or os.cpu_count() or 1
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.sessions = [
                ort.InferenceSession(
                    str(directory / spec.file), options, providers=["CPUExecutionProvider"]
                )
                for _ in range(workers)
            ]
            self.tokenizer = Tokenizer.from_file(str(tokenizer))
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ArtifactError(f"{directory}: the ONNX model cannot be loaded: {exc}") from exc
        self._start_workers()
        self.tokenizer.enable_truncation(spec.max_length)
        self.tokenizer.no_padding()
        self.manifest = manifest
        self.name, self.version = manifest.name, manifest.version
        self.tasks = tuple(manifest.tasks)
        self.max_rows, self.max_tokens = max_rows, max_tokens
        self.overhead_tokens = overhead_tokens
        self._outputs = [logits_output(task) for task in self.tasks] + [EMBEDDING_OUTPUT]
        self.predict(["warm-up: the first call allocates the session's buffers"])

    @property
    def workers(self) -> int:
        return len(self.sessions)

    def _start_workers(self) -> None:
        """A pool of one thread per session; each thread takes a session of its own."""
        free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for session in self.sessions:
            free.put(session)
        self._worker = threading.local()
        self._pool = ThreadPoolExecutor(
            self.workers,
            thread_name_prefix="onnx",
            initializer=lambda: setattr(self._worker, "session", free.get_nowait()),
        )

    def _run(self, texts: Sequence[str]) -> tuple[dict[Task, np.ndarray], np.ndarray]:
        encodings = self.tokenizer.encode_batch([normalize(text) for text in texts])
        lengths = [len(encoding.ids) for encoding in encodings]

        def run(group: np.ndarray) -> list[Any]:
            width = max(lengths[i] for i in group)
            ids = np.zeros((len(group), width), dtype=np.int64)
            mask = np.zeros((len(group), width), dtype=np.int64)
            for row, index in enumerate(group):
                ids[row, : lengths[index]] = encodings[index].ids
                mask[row, : lengths[index]] = 1
            result: list[Any] = self._worker.session.run(
                self._outputs, {"input_ids": ids, "attention_mask": mask}
            )
            return result

        # Enough groups to keep every worker busy, even for a handful of comments; the costliest
        # first, so the workers finish together.
        rows = max(1, min(self.max_rows, -(-len(texts) // self.workers)))
        groups = buckets(lengths, rows, self.max_tokens, self.overhead_tokens)
        groups.sort(key=lambda group: -len(group) * lengths[group[-1]])
        results = list(self._pool.map(run, groups))
        back_to_input_order = np.argsort(np.concatenate(groups))
        merged = [
            np.concatenate([result[k] for result in results])[back_to_input_order]
            for k in range(len(self._outputs))
        ]
        return dict(zip(self.tasks, merged[:-1], strict=True)), merged[-1]

    def score(self, texts: Sequence[str]) -> Scores:
        if not texts:
            return Scores.empty(self.tasks)
        logits, _ = self._run(texts)
        probabilities = {
            task: calibrated(values, self.manifest.tasks[task]) for task, values in logits.items()
        }
        return Scores.decided(probabilities, self.manifest.thresholds())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length sentence embeddings from the same (adapted) encoder pass."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return self._run(texts)[1]
