"""`commentdesk train --feedback`: a model's heads fitted again on moderator decisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from commentdesk.cli import app as cli
from model.artifact import read_manifest, sha256_file
from model.scorer import load_scorer
from model.tasks import Task
from training.catalog import load_catalog
from training.evaluate import CROSS_VALIDATED, cross_validated_figures, evaluate_scorer
from training.feedback import (
    FeedbackOptions,
    FeedbackRegression,
    _Retraining,
    held_out_mask,
    load_feedback,
    retrain_heads,
)

runner = CliRunner()


def _feedback_file(path: Path) -> Path:
    """Decisions as `commentdesk feedback export` writes them: questions and complaints."""
    rows = []
    for i in range(40):
        asking = i % 2 == 0
        text = f"can you help with my order {i}?" if asking else f"thanks for the quick fix {i}"
        rows.append(
            {"text": text, "task": "question", "label": "question" if asking else "not-question"}
        )
        if i % 4 == 1:
            rows.append({"text": text, "task": "sentiment", "label": "positive"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_held_out_split_is_by_text_and_stable() -> None:
    texts = pd.Series([f"comment {i}" for i in range(1000)] + ["comment 7"])
    mask = held_out_mask(texts, 0.2)
    assert 150 < mask.sum() < 260
    assert mask[7] == mask[1000]  # the same text falls on the same side
    assert (held_out_mask(texts, 0.2) == mask).all()


def test_retrain_changes_only_the_named_heads_and_reports_before_and_after(
    tiny_transformer_dir: Path, tiny_encoder_dir: Path, synthetic_data_dir: Path, tmp_path: Path
) -> None:
    path = _feedback_file(tmp_path / "feedback.jsonl")
    rows = load_feedback(path)
    output = tmp_path / "retrained"
    options = FeedbackOptions(replay_rows=50, max_drop=100.0, max_val_drop=100.0)
    manifest = retrain_heads(
        tiny_transformer_dir,
        rows,
        synthetic_data_dir,
        output,
        options,
        sha256_file(path),
        tiny_encoder_dir,
    )
    base = read_manifest(tiny_transformer_dir)
    assert manifest.version == f"{base.version}+feedback.{sha256_file(path)[:8]}"
    assert manifest.training_data["feedback"] == sha256_file(path)
    assert manifest.onnx is not None  # the int8 export follows the new heads

    before, after = (
        load_file(tiny_transformer_dir / "adapters.safetensors"),
        load_file(output / "adapters.safetensors"),
    )
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {
        f"heads.{t}.1.{p}" for t in ("question", "sentiment") for p in ("weight", "bias")
    }
    for task in ("offensive", "hate", "emotion", "irony"):
        assert manifest.tasks[task] == base.tasks[task]  # type: ignore[index]

    report = json.loads((output / "feedback-report.json").read_text())
    assert report["feedback_rows"] == 50 and 0 < report["held_out_rows"] < 50
    question_sets = {row["set"] for row in report["question"]["comparison"]}
    assert question_sets == {"brand_comments/dev", "feedback/held-out"}
    sentiment_sets = {row["set"] for row in report["sentiment"]["comparison"]}
    assert "tweeteval-sentiment/test" in sentiment_sets
    for row in report["question"]["comparison"] + report["sentiment"]["comparison"]:
        assert 0 <= row["before"] <= 100 and 0 <= row["after"] <= 100
    assert manifest.metrics["feedback"]["question/feedback/held-out/after"] == next(
        r["after"] for r in report["question"]["comparison"] if r["set"] == "feedback/held-out"
    )
    scorer = load_scorer(output, encoder_dir=tiny_encoder_dir)
    assert scorer.version == manifest.version
    assert len(scorer.predict(["can you help?"])) == 1


def test_a_head_that_loses_on_validation_at_every_weight_stays_as_it_was(
    tiny_transformer_dir: Path, tiny_encoder_dir: Path, synthetic_data_dir: Path, tmp_path: Path
) -> None:
    path = _feedback_file(tmp_path / "feedback.jsonl")
    output = tmp_path / "kept"
    # A validation gain of 100 points is required: no weight gets it, the sentiment head stays.
    options = FeedbackOptions(replay_rows=50, max_drop=100.0, max_val_drop=-100.0)
    retrain_heads(
        tiny_transformer_dir, load_feedback(path), synthetic_data_dir, output, options,
        sha256_file(path), tiny_encoder_dir,
    )  # fmt: skip
    report = json.loads((output / "feedback-report.json").read_text())
    assert report["sentiment"]["kept"] == "the old head"
    assert report["sentiment"]["feedback_weight"] == 0.0
    assert "kept" not in report["question"]  # no validation data: the question head is refitted
    before = load_file(tiny_transformer_dir / "adapters.safetensors")
    after = load_file(output / "adapters.safetensors")
    assert torch.equal(before["heads.sentiment.1.weight"], after["heads.sentiment.1.weight"])
    assert not torch.equal(before["heads.question.1.weight"], after["heads.question.1.weight"])
    for row in report["sentiment"]["comparison"]:
        assert row["before"] == row["after"]


def test_a_drop_on_a_test_split_refuses_the_model(
    tiny_transformer_dir: Path, tiny_encoder_dir: Path, synthetic_data_dir: Path, tmp_path: Path
) -> None:
    path = _feedback_file(tmp_path / "feedback.jsonl")
    output = tmp_path / "refused"
    # max_drop below zero: even an unchanged metric counts as a drop.
    with pytest.raises(FeedbackRegression, match=r"lost more than -1\.0 points") as refused:
        retrain_heads(
            tiny_transformer_dir, load_feedback(path), synthetic_data_dir, output,
            FeedbackOptions(replay_rows=50, max_drop=-1.0, max_val_drop=100.0), "0" * 64, tiny_encoder_dir,
        )  # fmt: skip
    assert not output.exists()
    assert {"question", "sentiment"} <= set(refused.value.report)  # the CLI prints the table


def test_train_command_checks_its_arguments(
    tiny_model_dir: Path, synthetic_data_dir: Path, tmp_path: Path
) -> None:
    neither = runner.invoke(cli, ["train"])
    assert neither.exit_code == 2 and "either --config" in neither.output
    path = _feedback_file(tmp_path / "feedback.jsonl")
    both = runner.invoke(
        cli, ["train", "--feedback", str(path), "--config", "configs/baseline.toml"]
    )
    assert both.exit_code == 2 and "either --config" in both.output
    for option, value in (("--folds", "5"), ("--out-of-fold", str(tmp_path / "oof.jsonl"))):
        alone = runner.invoke(cli, ["train", "--config", "configs/baseline.toml", option, value])
        assert alone.exit_code == 2 and "--out-of-fold go with --feedback" in alone.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hi", "task": "question", "label": "maybe"}\n', encoding="utf-8")
    args = ["--model-dir", str(tiny_model_dir), "--data-dir", str(synthetic_data_dir)]
    result = runner.invoke(cli, ["train", "--feedback", str(bad), *args])
    assert result.exit_code == 2 and "bad.jsonl:1" in result.output
    unknown = runner.invoke(
        cli, ["train", "--feedback", str(path), "--set", "feedback.nope=1", *args]
    )
    assert unknown.exit_code == 2 and "unknown key" in unknown.output
    baseline = runner.invoke(cli, ["train", "--feedback", str(path), *args])
    assert baseline.exit_code == 2 and "--extra-data" in baseline.output


def test_cross_validation_holds_each_fold_out_and_evaluate_reports_it(
    tiny_transformer_dir: Path,
    tiny_encoder_dir: Path,
    synthetic_data_dir: Path,
    brand_question_labels: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    labels_file = brand_question_labels
    rows = load_feedback(labels_file)
    catalog = load_catalog(synthetic_data_dir)
    dev = catalog.select(Task.QUESTION, "dev", ["brand_comments"])
    assert sorted(rows["text"]) == sorted(dev["text"])

    fits: list[tuple[set[str], set[str]]] = []
    fit = _Retraining.fit

    def spy(self: _Retraining, task: Task) -> Any:
        mine = self.feedback["task"] == task.value
        fits.append(
            (set(self.feedback.loc[mine & ~self.held, "text"]), set(self.feedback.loc[mine & self.held, "text"]))
        )  # fmt: skip
        return fit(self, task)

    monkeypatch.setattr(_Retraining, "fit", spy)
    output = tmp_path / "in-domain"
    options = FeedbackOptions(replay_rows=50, max_drop=100.0)
    manifest = retrain_heads(
        tiny_transformer_dir, rows, synthetic_data_dir, output, options,
        sha256_file(labels_file), tiny_encoder_dir, folds=3, version="9.9.9",
    )  # fmt: skip
    # Every fold is decided by heads that never saw it, every row is held out exactly once,
    # then the served heads are fitted on every row.
    assert len(fits) == 4
    for trained, held in fits[:3]:
        assert trained and held and not trained & held
    assert set().union(*(held for _, held in fits[:3])) == set(rows["text"])
    assert fits[3] == (set(rows["text"]), set())
    report = json.loads((output / "feedback-report.json").read_text())["cross_validation"]
    assert set(report["question"]) == {"feedback", "brand_comments/dev"}
    entry = report["question"]["brand_comments/dev"]
    assert entry["rows"] == len(dev) and entry["folds"] == 3
    assert sum(sum(row.values()) for row in entry["confusion"].values()) == len(dev)
    assert 0 <= entry["after"] <= 100
    assert manifest.version == "9.9.9"
    assert manifest.metrics[CROSS_VALIDATED]["question/brand_comments/dev/after"] == entry["after"]
    # A later refit keeps the out-of-fold figures of the heads it leaves alone, and only those.
    sentiment = rows.assign(task="sentiment", label="negative").head(20)
    kept = retrain_heads(
        output, sentiment, synthetic_data_dir, tmp_path / "sentiment", options, "1" * 64,
        tiny_encoder_dir,
    )  # fmt: skip
    assert kept.metrics[CROSS_VALIDATED] == manifest.metrics[CROSS_VALIDATED]
    refitted = retrain_heads(
        output, rows, synthetic_data_dir, tmp_path / "question", options, "2" * 64,
        tiny_encoder_dir,
    )  # fmt: skip
    assert refitted.metrics[CROSS_VALIDATED] == {}
    with pytest.raises(ValueError, match="at least 2 folds"):
        retrain_heads(
            tiny_transformer_dir, rows, synthetic_data_dir, tmp_path / "x", options, "0" * 64,
            tiny_encoder_dir, folds=1,
        )  # fmt: skip

    scorer = load_scorer(output, encoder_dir=tiny_encoder_dir)
    results, predictions = evaluate_scorer(scorer, catalog, "tiny")
    in_sample = next(r.value for r in results if r.task is Task.QUESTION)
    replaced = cross_validated_figures(manifest, results, predictions)
    assert replaced == [(Task.QUESTION, "brand_comments/dev", in_sample, entry["after"] / 100)]
    reported = next(r for r in results if r.task is Task.QUESTION)
    assert reported.value == entry["after"] / 100
    frame = predictions[(Task.QUESTION, "brand_comments")]
    counts = pd.crosstab(frame["gold"], frame["predicted"])
    for gold, row in entry["confusion"].items():
        for predicted, count in row.items():
            assert counts.get(predicted, {}).get(gold, 0) == count
    # The other tasks keep their measured figures.
    assert all(r.value == s.value for r, s in zip(results, evaluate_scorer(scorer, catalog, "tiny")[0], strict=True) if r.task is not Task.QUESTION)  # fmt: skip


def test_data_labels_refuses_unknown_tasks_and_empty_sets(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    args = ["-o", str(tmp_path / "x.jsonl"), "--data-dir", str(synthetic_data_dir)]
    unknown = runner.invoke(cli, ["data", "labels", "brand_comments/dev", "--task", "nope", *args])
    assert unknown.exit_code == 2 and "nope" in unknown.output
    empty = runner.invoke(
        cli, ["data", "labels", "brand_comments/test", "--task", "question", *args]
    )
    assert empty.exit_code == 2 and "no question labels in brand_comments/test" in empty.output
    assert not (tmp_path / "x.jsonl").exists()


def test_decisions_on_training_texts_are_not_replayed_as_regular_rows(
    tiny_transformer_dir: Path,
    tiny_encoder_dir: Path,
    synthetic_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    train = load_catalog(synthetic_data_dir).select(
        Task.OFFENSIVE, "train", ["tweeteval-offensive"]
    )
    decided = train.head(12).assign(label="offensive")[["text", "task", "label"]]
    fitted_on: list[list[str]] = []
    vectors = _Retraining.vectors

    def spy(self: _Retraining, texts: Any) -> Any:
        fitted_on.append(list(texts))
        return vectors(self, texts)

    monkeypatch.setattr(_Retraining, "vectors", spy)
    options = FeedbackOptions(replay_rows=100_000, max_drop=100.0, max_val_drop=100.0)
    retrain_heads(
        tiny_transformer_dir, decided, synthetic_data_dir, tmp_path / "out", options, "3" * 64,
        tiny_encoder_dir, folds=3,
    )  # fmt: skip
    fits = [texts for texts in fitted_on if len(texts) > len(decided)]  # regular rows + decisions
    assert fits
    for texts in fits:
        for text in decided["text"]:
            assert texts.count(text) <= 1  # only as a decision, never again as a replayed row
