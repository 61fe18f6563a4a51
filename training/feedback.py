"""Moderator decisions as labelled training rows, and a model's heads fitted again on them."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from model.artifact import Manifest, TaskSpec, read_manifest, sha256_file, write_manifest
from model.scorer import decide_rows, softmax
from model.tasks import LABELS, Task, is_binary
from model.text import dedup_key
from model.transformer import MultiTaskNetwork, encode
from training.calibration import fit_temperature
from training.metrics import best_threshold, official_metric

logger = logging.getLogger(__name__)

FEEDBACK_SOURCE = "feedback"
COLUMNS = ["text", "task", "label", "split", "source"]


def load_feedback(path: Path) -> pd.DataFrame:
    """Read a ``commentdesk feedback export`` file; every row must carry a known task and label."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            task = Task(item["task"])
            if item["label"] not in LABELS[task] or not str(item["text"]).strip():
                raise ValueError(f"label {item['label']!r} is not one of {LABELS[task]}")
        except (json.JSONDecodeError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}:{number}: {exc}") from exc
        rows.append((item["text"], task.value, item["label"], "train", FEEDBACK_SOURCE))
    return pd.DataFrame(rows, columns=COLUMNS)


class FeedbackRegression(Exception):
    """Retraining on feedback lowered a test-split metric by more than the allowed drop."""


@dataclass(frozen=True)
class FeedbackOptions:
    """How decision labels join the regular data when the heads are fitted again."""

    held_out: float = 0.2  # share of the feedback (by text) kept back to measure the change
    replay_rows: int = 4000  # regular training rows per task, sampled, that anchor the head
    feedback_weight: float = 4.0  # each decision counts as this many regular rows
    prior: float = 1e-3  # L2 pull of the new head toward the old one
    max_drop: float = 1.0  # points a test-split metric may lose before the model is refused
    seed: int = 0
    batch_size: int = 64


def held_out_mask(texts: pd.Series, share: float) -> np.ndarray:
    """A stable, seed-free split by text: duplicates of a comment always fall on the same side."""
    buckets = texts.map(lambda t: int(hashlib.sha256(dedup_key(t).encode()).hexdigest()[:8], 16))
    result: np.ndarray = (buckets % 1000 < share * 1000).to_numpy()
    return result


@torch.inference_mode()
def pooled_vectors(
    network: MultiTaskNetwork, tokenizer: Any, texts: Sequence[str], batch_size: int
) -> np.ndarray:
    """The vectors the heads read, batched by length; computed once, reused by every fit."""
    network.eval()
    out = np.zeros((len(texts), network.encoder.config.hidden_size), dtype=np.float32)
    order = np.argsort([len(t) for t in texts])
    for start in range(0, len(texts), batch_size):
        index = order[start : start + batch_size]
        batch = encode(tokenizer, [texts[i] for i in index], network.config.max_length)
        out[index] = network.pool(**batch).float().numpy()
    return out


def _fit_head(
    head: nn.Linear,
    vectors: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    class_weights: np.ndarray | None,
    prior: float,
) -> nn.Linear:
    """Weighted cross-entropy from the old head as start and as prior (full batch, L-BFGS)."""
    fitted = nn.Linear(head.in_features, head.out_features)
    fitted.load_state_dict(head.state_dict())
    old = [p.detach().clone() for p in head.parameters()]
    x = torch.as_tensor(vectors)
    y = torch.as_tensor(labels, dtype=torch.long)
    w = torch.as_tensor(weights, dtype=torch.float32)
    if class_weights is not None:
        w = w * torch.as_tensor(class_weights, dtype=torch.float32)[y]
    optimizer = torch.optim.LBFGS(
        list(fitted.parameters()), max_iter=200, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        losses = nn.functional.cross_entropy(fitted(x), y, reduction="none")
        pull = sum(((p - q) ** 2).sum() for p, q in zip(fitted.parameters(), old, strict=True))
        loss: torch.Tensor = (losses * w).sum() / w.sum() + prior * pull
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    return fitted


def _class_weights(labels: np.ndarray, size: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=size).astype(np.float64)
    weights: np.ndarray = counts.sum() / (size * np.maximum(counts, 1))
    return weights


def _metric(task: Task, gold: np.ndarray, probabilities: np.ndarray, spec: TaskSpec) -> float:
    names = np.array(LABELS[task], dtype=object)
    predicted = decide_rows(task, probabilities, spec.threshold)
    return round(100 * official_metric(task, list(names[gold]), list(predicted)), 2)


def retrain_heads(
    base_dir: Path,
    feedback: pd.DataFrame,
    data_dir: Path,
    output_dir: Path,
    options: FeedbackOptions,
    feedback_hash: str,
    encoder_dir: Path | None = None,
) -> Manifest:
    """A new version of a transformer model whose heads learned from moderator decisions.

    The encoder and adapters stay as they are, so every comment's vector is computed once; each
    task the feedback names gets its head fitted again on a sample of its regular training data
    plus the decisions (weighted), then its temperature and threshold on its validation data as
    in training. Before and after are compared on every test split of those tasks (rows that
    are also in the feedback left out) and on the held-out decisions; a drop of more than
    ``max_drop`` points on a test split refuses the model.
    """
    from safetensors.torch import load_file, save_file

    from model.scorer import TransformerScorer
    from training.catalog import EVAL_SPLITS, load_catalog
    from training.onnx_export import export_onnx
    from training.transformer import ADAPTERS_FILE, _plans

    manifest = read_manifest(base_dir)
    if manifest.kind != "transformer-lora":
        raise ValueError(
            f"{base_dir} holds a {manifest.kind} model: retrain it with --config and --extra-data"
        )
    rng = np.random.default_rng(options.seed)
    scorer = TransformerScorer(base_dir, manifest, encoder_dir)
    network, tokenizer = scorer.network, scorer.tokenizer
    plans = {plan.task: plan for plan in _plans(manifest.config)}
    catalog = load_catalog(data_dir)
    held = held_out_mask(feedback["text"], options.held_out)
    feedback_keys = set(feedback["text"].map(dedup_key))

    def vectors(texts: Sequence[str]) -> np.ndarray:
        return pooled_vectors(network, tokenizer, list(texts), options.batch_size)

    tasks = [Task(t) for t in sorted(set(feedback.loc[~held, "task"]))]
    unknown = [task for task in tasks if task not in plans]
    if unknown:
        raise ValueError(f"the model has no head for {unknown}")
    specs = dict(manifest.tasks)
    state = load_file(base_dir / ADAPTERS_FILE)
    report: dict[str, Any] = {"feedback_rows": len(feedback), "held_out_rows": int(held.sum())}
    for task in tasks:
        plan, names = plans[task], list(LABELS[task])
        regular = catalog.select(task, "train", plan.train_sources)
        regular = regular.iloc[
            rng.permutation(len(regular))[: min(options.replay_rows, len(regular))]
        ]
        mine = feedback[(feedback["task"] == task.value) & ~held]
        texts = [*regular["text"], *mine["text"]]
        labels = np.array([names.index(label) for label in [*regular["label"], *mine["label"]]])
        weights = np.concatenate(
            [np.ones(len(regular)), np.full(len(mine), options.feedback_weight)]
        )
        sequence = network.heads[task.value]
        assert isinstance(sequence, nn.Sequential)
        old_head = sequence[1]
        assert isinstance(old_head, nn.Linear)
        new_head = _fit_head(
            old_head,
            vectors(texts),
            labels,
            weights,
            _class_weights(labels, len(names)) if plan.class_weights else None,
            options.prior,
        )

        def probabilities(x: np.ndarray, head: nn.Linear, temperature: float) -> np.ndarray:
            with torch.no_grad():
                logits = head(torch.as_tensor(x)).double().numpy()
            return softmax(logits, temperature)

        spec = specs[task]
        new_spec = spec
        if plan.val_source:
            val = catalog.select(task, "val", [plan.val_source])
            val_gold = val["label"].map(names.index).to_numpy()
            with torch.no_grad():
                val_logits = new_head(torch.as_tensor(vectors(list(val["text"])))).numpy()
            temperature = fit_temperature(val_logits, val_gold)
            threshold = spec.threshold
            if is_binary(task) and plan.threshold == "val":
                calibrated = softmax(val_logits, temperature)[:, 1]
                threshold = best_threshold(val_gold == 1, calibrated, task)
            new_spec = TaskSpec(labels=names, threshold=threshold, temperature=temperature)
        specs[task] = new_spec
        rows: list[dict[str, Any]] = []
        evaluations = catalog.examples[
            (catalog.examples["task"] == task.value)
            & catalog.examples["split"].isin([s for s in EVAL_SPLITS if s != "val"])
        ]
        for (source, split), group in evaluations.groupby(["source", "split"]):
            in_feedback = group["text"].map(dedup_key).isin(feedback_keys)
            kept = group[~in_feedback]
            if kept.empty:
                continue
            x, gold = vectors(list(kept["text"])), kept["label"].map(names.index).to_numpy()
            rows.append(
                {
                    "set": f"{source}/{split}",
                    "rows": len(kept),
                    "left_out_in_feedback": int(in_feedback.sum()),
                    "before": _metric(
                        task, gold, probabilities(x, old_head, spec.temperature), spec
                    ),
                    "after": _metric(
                        task, gold, probabilities(x, new_head, new_spec.temperature), new_spec
                    ),
                }
            )
        mine_held = feedback[(feedback["task"] == task.value) & held]
        if not mine_held.empty:
            x, gold = (
                vectors(list(mine_held["text"])),
                mine_held["label"].map(names.index).to_numpy(),
            )
            rows.append(
                {
                    "set": "feedback/held-out",
                    "rows": len(mine_held),
                    "left_out_in_feedback": 0,
                    "before": _metric(
                        task, gold, probabilities(x, old_head, spec.temperature), spec
                    ),
                    "after": _metric(
                        task, gold, probabilities(x, new_head, new_spec.temperature), new_spec
                    ),
                }
            )
        report[task.value] = {
            "regular_rows": len(regular),
            "feedback_rows": len(mine),
            "temperature": new_spec.temperature,
            "threshold": new_spec.threshold,
            "comparison": rows,
        }
        logger.info("%s: %s", task.value, rows)
        state[f"heads.{task.value}.1.weight"] = new_head.weight.detach().half()
        state[f"heads.{task.value}.1.bias"] = new_head.bias.detach().half()

    drops = [
        f"{task}: {row['set']} {row['before']} -> {row['after']}"
        for task, entry in report.items()
        if isinstance(entry, dict)
        for row in entry["comparison"]
        if row["set"] != "feedback/held-out" and row["before"] - row["after"] > options.max_drop
    ]
    if drops:
        raise FeedbackRegression(
            f"a test split lost more than {options.max_drop} points: {'; '.join(drops)}"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, output_dir / ADAPTERS_FILE)
    updated = manifest.model_copy(
        update={
            "version": f"{manifest.version}+feedback.{feedback_hash[:8]}",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "tasks": specs,
            "files": {ADAPTERS_FILE: sha256_file(output_dir / ADAPTERS_FILE)},
            "onnx": None,
            "metrics": {**manifest.metrics, "feedback": _flat(report)},
            "training_data": {**manifest.training_data, FEEDBACK_SOURCE: feedback_hash},
            "config": {
                **manifest.config,
                "feedback": {"base": f"{manifest.name} {manifest.version}", **asdict(options)},
            },
        }
    )
    write_manifest(output_dir, updated)
    (output_dir / "feedback-report.json").write_text(json.dumps(report, indent=2) + "\n")
    if manifest.onnx is not None:
        export_onnx(output_dir, encoder_dir)
    return read_manifest(output_dir)


def _flat(report: dict[str, Any]) -> dict[str, float]:
    """The comparison as the manifest's metrics: ``task/set/before`` -> value."""
    return {
        f"{task}/{row['set']}/{when}": float(row[when])
        for task, entry in report.items()
        if isinstance(entry, dict)
        for row in entry["comparison"]
        for when in ("before", "after")
    }
