"""Encoder adaptation to decisions (`train --feedback --set feedback.encoder_steps=N`)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from commentdesk.cli import app as cli
from model.artifact import read_manifest, sha256_file
from model.scorer import TransformerScorer, decide_rows
from model.tasks import LABELS, Task
from training.adaptation import (
    TEACHER_LAYERS,
    AdaptationOptions,
    adapt_encoder,
    fold_adapters_file,
    teacher_labels,
    teacher_logits,
)
from training.evaluate import CROSS_VALIDATED
from training.feedback import FeedbackOptions, load_feedback, retrain_heads, text_buckets
from training.transformer import pooled_vectors


def _question_rows(count: int) -> tuple[list[str], np.ndarray]:
    texts = [
        f"can you check my order {i}?" if i % 2 == 0 else f"lovely service today {i}"
        for i in range(count)
    ]
    return texts, np.array([1 - i % 2 for i in range(count)])


def _drift(scorer: TransformerScorer, texts: list[str], targets: dict[Task, torch.Tensor]) -> float:
    """Mean absolute change of the other heads' logits on the replayed texts."""
    now = teacher_logits(scorer.network, scorer.tokenizer, texts, list(targets))
    return float(np.mean([(now[t] - targets[t]).abs().mean().item() for t in targets]))


def test_distillation_keeps_the_other_heads_while_the_task_learns(
    tiny_transformer_dir: Path, tiny_encoder_dir: Path
) -> None:
    manifest = read_manifest(tiny_transformer_dir)
    others = [t for t in manifest.tasks if t is not Task.QUESTION]
    replay = [f"some other comment number {i} about the weather" for i in range(64)]
    decisions, anchors = _question_rows(32), _question_rows(16)
    drift, weights = {}, {}
    for distill in (0.0, 5.0):
        scorer = TransformerScorer(tiny_transformer_dir, manifest, tiny_encoder_dir)
        targets = teacher_logits(scorer.network, scorer.tokenizer, replay, others)
        heads = {t: scorer.network.heads[t.value][1].weight.detach().clone() for t in others}
        options = AdaptationOptions(steps=30, lr=5e-3, head_lr=5e-3, batch_size=8,
                                    distill_weight=distill, warmup_steps=2)  # fmt: skip
        history = adapt_encoder(
            scorer.network, scorer.tokenizer, {Task.QUESTION: decisions},
            {Task.QUESTION: anchors}, (replay, targets), options,
        )  # fmt: skip
        assert len(history) == 1 and np.isfinite(history[0])
        drift[distill] = _drift(scorer, replay, targets)
        weights[distill] = all(
            torch.equal(heads[t], scorer.network.heads[t.value][1].weight) for t in others
        )
        assert all(p.requires_grad for p in scorer.network.heads.parameters())  # restored
    # Only the adapted task's head and the adapters train; distillation holds the rest in place.
    assert weights[0.0] and weights[5.0]
    assert drift[0.0] > 0
    assert drift[5.0] < 0.5 * drift[0.0]


def test_adapting_the_encoder_cross_validates_and_writes_a_complete_model(
    tiny_transformer_dir: Path,
    tiny_encoder_dir: Path,
    synthetic_data_dir: Path,
    brand_question_labels: Path,
    tmp_path: Path,
) -> None:
    labels_file = brand_question_labels
    output = tmp_path / "adapted"
    options = FeedbackOptions(encoder_steps=4, replay_rows=40, max_drop=100.0)
    retrain_heads(
        tiny_transformer_dir, load_feedback(labels_file), synthetic_data_dir, output, options,
        sha256_file(labels_file), tiny_encoder_dir, folds=2, version="9.9.9",
    )  # fmt: skip
    manifest = read_manifest(output)
    assert manifest.version == "9.9.9" and manifest.onnx is not None
    assert manifest.training_data["feedback"] == sha256_file(labels_file)
    assert manifest.config["feedback"]["encoder_steps"] == 4
    assert manifest.config["feedback"]["adapted"] == ["question"]
    # Validation figures of the adapted encoder, from the recalibration pass (no question split).
    assert set(manifest.metrics["val"]) == {t.value for t in manifest.tasks} - {"question"}
    assert all(0 <= v <= 1 for v in manifest.metrics["val"].values())
    before = load_file(tiny_transformer_dir / "adapters.safetensors")
    after = load_file(output / "adapters.safetensors")
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert any(".lora_" in name for name in moved)  # the encoder adapted
    assert "heads.question.1.weight" in moved
    assert not any(name.startswith("heads.sentiment") for name in moved)
    report = json.loads((output / "feedback-report.json").read_text())
    folded = report["cross_validation"]["question"]["brand_comments/dev"]
    assert folded["folds"] == 2
    assert manifest.metrics[CROSS_VALIDATED]["question/brand_comments/dev/after"] == folded["after"]
    # Every task reads the new encoder, so every task is compared before and after; the
    # question's own dev set is measured out of fold only.
    assert report["sentiment"]["comparison"] and not report["sentiment"]["adapted"]
    assert "brand_comments/dev" not in {row["set"] for row in report["question"]["comparison"]}
    # The written model loads and scores.
    scorer = TransformerScorer(output, manifest, tiny_encoder_dir)
    scores = scorer.score(["where is my parcel?"])
    assert set(scores.probabilities) == set(manifest.tasks)


def test_adapting_to_two_tasks_at_once_cross_validates_each(
    tiny_transformer_dir: Path,
    tiny_encoder_dir: Path,
    synthetic_data_dir: Path,
    brand_question_labels: Path,
    tmp_path: Path,
) -> None:
    # brand_comments dev's question and sentiment labels: the same texts, twice.
    path = tmp_path / "two-tasks.jsonl"
    exported = CliRunner().invoke(
        cli,
        ["data", "labels", "brand_comments/dev", "--task", "question", "--task", "sentiment",
         "-o", str(path), "--data-dir", str(synthetic_data_dir)],
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    brand = len(brand_question_labels.read_text().splitlines())
    assert f"{brand} question, {brand} sentiment labels" in exported.output
    output = tmp_path / "adapted"
    retrain_heads(
        tiny_transformer_dir, load_feedback(path), synthetic_data_dir, output,
        FeedbackOptions(encoder_steps=3, replay_rows=40, max_drop=100.0), sha256_file(path),
        tiny_encoder_dir, folds=2, predictions_file=tmp_path / "out-of-fold.jsonl",
    )  # fmt: skip
    manifest = read_manifest(output)
    assert manifest.config["feedback"]["adapted"] == ["question", "sentiment"]
    report = json.loads((output / "feedback-report.json").read_text())
    # One out-of-fold row per text: every head's probabilities and a unit embedding.
    predicted = [json.loads(line) for line in (tmp_path / "out-of-fold.jsonl").open()]
    assert len({row["text"] for row in predicted}) == len(predicted) == brand
    base = read_manifest(tiny_transformer_dir)
    for row in predicted:
        assert set(row["scores"]) == {task.value for task in base.tasks}
        assert all(abs(sum(p.values()) - 1) < 1e-4 for p in row["scores"].values())
        assert abs(np.linalg.norm(row["embedding"]) - 1) < 1e-4
    # Each fold's adapters are kept: loaded over the base model, they give that fold's rows.
    scorer = TransformerScorer(tiny_transformer_dir, base, tiny_encoder_dir)
    for fold in (0, 1):
        mine = [row for row in predicted if row["fold"] == fold]
        assert mine
        scorer.network.load_trainable_state(
            load_file(fold_adapters_file(tmp_path / "out-of-fold.jsonl", fold))
        )
        vectors = pooled_vectors(scorer.network, scorer.tokenizer, [r["text"] for r in mine], 8)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        assert np.allclose(unit, [r["embedding"] for r in mine], atol=1e-2)
    for task in ("question", "sentiment"):
        folded = report["cross_validation"][task]["brand_comments/dev"]
        assert folded["rows"] == brand and folded["folds"] == 2
        assert sum(sum(row.values()) for row in folded["confusion"].values()) == brand
        # The file's probabilities decide exactly the labels the out-of-fold figure counts.
        spec = base.tasks[Task(task)]
        probabilities = np.array([list(row["scores"][task].values()) for row in predicted])
        decided = Counter(decide_rows(Task(task), probabilities, spec.threshold).tolist())
        counted = {
            label: sum(row[label] for row in folded["confusion"].values())
            for label in LABELS[Task(task)]
        }
        assert decided == Counter({k: v for k, v in counted.items() if v})
        assert report[task]["adapted"]
        # Both adapted tasks' brand dev sets are measured out of fold only.
        assert "brand_comments/dev" not in {row["set"] for row in report[task]["comparison"]}
    assert not report["offensive"]["adapted"]
    after = load_file(output / "adapters.safetensors")
    before = load_file(tiny_transformer_dir / "adapters.safetensors")
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert {"heads.question.1.weight", "heads.sentiment.1.weight"} <= moved
    assert not any(name.startswith("heads.offensive") for name in moved)


@pytest.mark.parametrize(("steps", "folds"), [(3, 0), (0, 2)])
def test_out_of_fold_predictions_need_folds_and_an_adapting_encoder(
    tiny_transformer_dir: Path,
    synthetic_data_dir: Path,
    brand_question_labels: Path,
    tmp_path: Path,
    steps: int,
    folds: int,
) -> None:
    with pytest.raises(ValueError, match="out-of-fold predictions"):
        retrain_heads(
            tiny_transformer_dir, load_feedback(brand_question_labels), synthetic_data_dir,
            tmp_path / "out", FeedbackOptions(encoder_steps=steps), "hash", folds=folds,
            predictions_file=tmp_path / "out-of-fold.jsonl",
        )  # fmt: skip
    assert not (tmp_path / "out").exists() and not (tmp_path / "out-of-fold.jsonl").exists()


def test_the_teacher_learns_its_labels_from_the_decisions() -> None:
    rng = np.random.default_rng(0)
    train, new = rng.normal(size=(200, 6)), rng.normal(size=(100, 6))
    labels = teacher_labels(train, (train[:, 2] > 0).astype(int), new, seed=0)
    assert labels.shape == (100,)
    assert np.mean(labels == (new[:, 2] > 0)) >= 0.95


def test_pooled_vectors_of_chosen_layers_end_with_the_heads_vector(
    tiny_transformer_dir: Path, tiny_encoder_dir: Path
) -> None:
    scorer = TransformerScorer(tiny_transformer_dir, read_manifest(tiny_transformer_dir),
                               tiny_encoder_dir)  # fmt: skip
    texts = ["where is my parcel?", "thanks, all sorted", "a much longer comment " * 5]
    heads = pooled_vectors(scorer.network, scorer.tokenizer, texts, 2)
    layers = pooled_vectors(scorer.network, scorer.tokenizer, texts, 2, TEACHER_LAYERS)
    width = heads.shape[1]
    assert layers.shape == (3, len(TEACHER_LAYERS) * width)
    assert np.allclose(layers[:, -width:], heads, atol=1e-5)
    assert not np.allclose(layers[:, :width], heads, atol=1e-3)


def _question_anchors_seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], np.ndarray]]:
    """Records the question anchors each adapt_encoder call receives, in call order."""
    import training.adaptation as adaptation

    seen = []
    real = adaptation.adapt_encoder

    def recording(network, tokenizer, decisions, anchors, replay, options):  # type: ignore[no-untyped-def]
        texts, labels = anchors[Task.QUESTION]
        seen.append((list(texts), labels.copy()))
        return real(network, tokenizer, decisions, anchors, replay, options)

    monkeypatch.setattr(adaptation, "adapt_encoder", recording)
    return seen


def test_a_teacher_fitted_on_each_folds_decisions_relabels_the_rule_voted_anchors(
    tiny_transformer_dir: Path,
    tiny_encoder_dir: Path,
    synthetic_data_dir: Path,
    brand_question_labels: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feedback = load_feedback(brand_question_labels)
    fold_of = text_buckets(feedback["text"]) % 2
    # The same decisions with fold 0's labels flipped: fold 0's own model must not notice.
    flipped = feedback.copy()
    flipped.loc[fold_of == 0, "label"] = flipped.loc[fold_of == 0, "label"].map(
        {"question": "not-question", "not-question": "question"}
    )
    seen, runs = _question_anchors_seen(monkeypatch), {}
    for name, rows, teacher in (("rules", feedback, False), ("taught", feedback, True),
                                ("flipped", flipped, True)):  # fmt: skip
        start = len(seen)
        retrain_heads(
            tiny_transformer_dir, rows, synthetic_data_dir, tmp_path / name,
            FeedbackOptions(encoder_steps=2, replay_rows=40, max_drop=100.0,
                            teacher_anchors=teacher),
            "hash", tiny_encoder_dir, folds=2,
        )  # fmt: skip
        runs[name] = seen[start:]
        assert len(runs[name]) == 3  # two folds, then the served model
    votes = runs["rules"][0]
    assert all(np.array_equal(labels, votes[1]) for _, labels in runs["rules"])
    for texts, _ in runs["taught"] + runs["flipped"]:
        assert texts == votes[0]  # the same rows, only their labels change
    taught = runs["taught"]
    assert any(not np.array_equal(labels, votes[1]) for _, labels in taught)
    # Fold 0's model was taught without fold 0's labels: flipping them changes nothing there,
    # but the model fitted on every decision (the last call) learns from them.
    assert np.array_equal(runs["flipped"][0][1], taught[0][1])
    assert not np.array_equal(runs["flipped"][2][1], taught[2][1])
