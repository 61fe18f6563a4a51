"""Per-source calibration: the maths, the fit, the policy overlay and `commentdesk calibrate`
end to end on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from commentdesk.cli import app as cli
from model.scorer import Prediction, recalibrate, softmax
from model.tasks import Task
from service.auth import Role
from service.calibration import ALL_SOURCES, TaskOverlay, apply_overlay, load_overlays, policy_for
from service.db.tables import Comment, SourceCalibration
from service.policy import Action, Policy, Rule
from tests.conftest import Api
from training.source_calibration import SourceFit, fit_source

runner = CliRunner()


def test_recalibrate_is_temperature_scaling_of_the_logits() -> None:
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.3, -4.0]])
    served = softmax(logits, 1.5)
    np.testing.assert_allclose(recalibrate(served, 2.0), softmax(logits, 3.0), atol=1e-12)
    np.testing.assert_allclose(recalibrate(served, 1.0), served, atol=1e-12)


def test_fit_finds_a_sources_own_threshold_and_reports_before_and_after() -> None:
    rng = np.random.default_rng(0)
    positive = rng.uniform(0.02, 0.98, 400)
    # This source's moderators call a comment a question from P = 0.25 on: the model's 0.5 misses many.
    gold = np.where(positive + rng.normal(0, 0.03, 400) >= 0.25, "question", "not-question")
    fit = fit_source(Task.QUESTION, np.column_stack([1 - positive, positive]), list(gold), 0.5)
    assert isinstance(fit, SourceFit)
    assert fit.threshold is not None
    cut = recalibrate(np.array([[0.75, 0.25]]), fit.temperature)[0, 1]
    assert abs(fit.threshold - cut) < 0.05
    report = fit.report
    assert report["labels"] == 400
    assert report["before"]["f1"] < report["after_in_sample"]["f1"]
    assert report["after_cross_validated_5_fold"]["f1"] > report["before"]["f1"] + 0.05
    assert report["before"]["precision"] > report["after_in_sample"]["precision"] - 0.01


def test_fit_refuses_too_few_labels_or_one_class() -> None:
    probabilities = np.tile([0.4, 0.6], (40, 1))
    few = fit_source(Task.QUESTION, probabilities[:10], ["question"] * 10, 0.5)
    assert isinstance(few, str) and "10 labels" in few
    one_class = fit_source(Task.QUESTION, probabilities, ["question"] * 40, 0.5)
    assert isinstance(one_class, str) and "two must be present" in one_class


def test_a_fit_that_does_worse_cross_validated_is_not_kept() -> None:
    """The model is already right (labels follow its 0.5 threshold, with 20 % noise): a fit on
    40 labels only overfits the noise, and cross-validation shows it."""
    rng = np.random.default_rng(0)
    positive = rng.uniform(0, 1, 40)
    gold = (positive >= 0.5) ^ (rng.random(40) < 0.2)
    labels = ["question" if g else "not-question" for g in gold]
    fit = fit_source(Task.QUESTION, np.column_stack([1 - positive, positive]), labels, 0.5)
    assert isinstance(fit, str)
    assert "the model's settings stay" in fit and "0.8333" in fit


def test_sentiment_gets_a_temperature_and_keeps_argmax() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (600, 3))
    # The labels follow softmax(logits / 3): the served softmax(logits) is over-confident.
    truth = softmax(logits, 3.0)
    names = np.array(["negative", "neutral", "positive"], dtype=object)
    gold = [names[rng.choice(3, p=row)] for row in truth]
    fit = fit_source(Task.SENTIMENT, softmax(logits), gold, None)
    assert isinstance(fit, SourceFit) and fit.threshold is None
    assert 2.0 < fit.temperature < 4.5
    assert fit.report["before"]["metric"] == fit.report["after_in_sample"]["metric"]


def test_overlay_changes_probabilities_labels_and_entry_rule() -> None:
    prediction = Prediction(
        {Task.QUESTION: "not-question", Task.SENTIMENT: "neutral"},
        {
            Task.QUESTION: {"not-question": 0.7, "question": 0.3},
            Task.SENTIMENT: {"negative": 0.2, "neutral": 0.5, "positive": 0.3},
        },
    )
    overlay = {Task.QUESTION: TaskOverlay(1.0, 0.25)}
    adjusted = apply_overlay(prediction, overlay)
    assert adjusted.labels[Task.QUESTION] == "question"
    assert adjusted.scores[Task.QUESTION]["question"] == pytest.approx(0.3)
    assert adjusted.scores[Task.SENTIMENT] == prediction.scores[Task.SENTIMENT]

    policy = Policy(
        rules=(
            Rule(Task.QUESTION, "question", 0.5, Action.REPLY),
            Rule(Task.QUESTION, "question", 0.2, Action.REVIEW),
            Rule(Task.SENTIMENT, "negative", 0.75, Action.REPLY),
        )
    )
    rules = policy_for(policy, {Task.QUESTION: TaskOverlay(1.0, 0.3)}).rules
    assert [r.min_probability for r in rules] == [0.5, 0.3, 0.75]  # entry rule 0.2 -> 0.3
    rules = policy_for(policy, {Task.QUESTION: TaskOverlay(1.0, 0.6)}).rules
    assert [r.min_probability for r in rules] == [0.6, 0.6, 0.75]  # never under the entry rule


def _ingest(api: Api, source: str, texts: list[str], offset: int = 0) -> list[dict[str, Any]]:
    items = [
        {"source": source, "external_id": str(offset + i), "text": text}
        for i, text in enumerate(texts)
    ]
    response = api.client.post(
        "/v1/comments", json={"comments": items}, headers=api.auth(Role.SCORER)
    )
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def _stored(api: Api, source: str) -> list[Comment]:
    with api.app.state.sessions() as session:
        return list(
            session.scalars(select(Comment).where(Comment.source == source).order_by(Comment.id))
        )


def _prediction(comment: Comment) -> Prediction:
    return Prediction(
        {Task(t): label for t, label in comment.labels.items()},
        {Task(t): values for t, values in comment.scores.items()},
    )


QUESTIONS = [f"where is my order {i}? can you help" for i in range(20)]
STATEMENTS = [f"great stream tonight number {i}" for i in range(20)]


def test_calibrate_command_stores_an_overlay_that_ingest_applies_to_that_source_only(
    api: Api, db_url: str, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMMENTDESK_DATABASE__URL", db_url)
    monkeypatch.setenv("COMMENTDESK_MODEL_DIR", str(tiny_model_dir))
    missing = runner.invoke(cli, ["calibrate", "--source", "brand-a"])
    assert missing.exit_code == 2 and "no moderator decisions" in missing.output

    results = _ingest(api, "brand-a", QUESTIONS + STATEMENTS)
    moderator = api.auth(Role.MODERATOR)
    for result, text in zip(results, QUESTIONS + STATEMENTS, strict=True):
        body: dict[str, Any] = (
            {"action": "reply", "reply_text": "DM us"}
            if text in QUESTIONS
            else {"action": "relabel", "labels": {"question": "not-question"}}
        )
        response = api.client.post(
            f"/v1/queue/{result['id']}/decision", json=body, headers=moderator
        )
        assert response.status_code == 200, response.text

    strict = runner.invoke(cli, ["calibrate", "--source", "brand-a", "--min-labels", "100"])
    assert strict.exit_code == 1 and "40 labels; at least 100" in strict.output
    dry = runner.invoke(cli, ["calibrate", "--source", "brand-a", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "question: 40 labels (not-question 20, question 20)" in dry.output
    assert "5-fold cross-validated" in dry.output and "dry run" in dry.output
    with api.app.state.sessions() as session:
        assert session.scalars(select(SourceCalibration)).first() is None

    result = runner.invoke(cli, ["calibrate", "--source", "brand-a"])
    assert result.exit_code == 0, result.output
    with api.app.state.sessions() as session:
        (row,) = session.scalars(select(SourceCalibration)).all()
        overlay = {Task.QUESTION: TaskOverlay(row.temperature, row.threshold)}
        assert (row.source, row.task, row.labels_used) == ("brand-a", "question", 40)
        assert row.report["label_counts"] == {"not-question": 20, "question": 20}
        assert {"before", "after_in_sample", "after_cross_validated_5_fold"} <= set(row.report)

    texts = ["can you fix my account?", "nice colours", "is the shop open today?"]
    _ingest(api, "brand-a", texts, offset=100)
    _ingest(api, "brand-b", texts, offset=100)
    calibrated, plain = _stored(api, "brand-a")[-3:], _stored(api, "brand-b")
    for a, b in zip(calibrated, plain, strict=True):
        expected = apply_overlay(_prediction(b), overlay)
        assert a.labels["question"] == expected.labels[Task.QUESTION]
        assert a.scores["question"] == pytest.approx(expected.scores[Task.QUESTION])
        assert a.labels["sentiment"] == b.labels["sentiment"]

    # A calibration fitted for another model version is ignored.
    with api.app.state.sessions() as session:
        session.execute(update(SourceCalibration).values(model_version="0.0.0-other"))
        session.commit()
    _ingest(api, "brand-a", texts, offset=200)
    for a, b in zip(_stored(api, "brand-a")[-3:], plain, strict=True):
        assert a.scores == b.scores and a.labels == b.labels

    # Fitted on every source's decisions, it applies to sources without their own calibration.
    assert runner.invoke(cli, ["calibrate"]).exit_code == 2
    both = runner.invoke(cli, ["calibrate", "--source", "brand-a", "--all-sources"])
    assert both.exit_code == 2 and "either --source" in both.output
    pooled = runner.invoke(cli, ["calibrate", "--all-sources"])
    assert pooled.exit_code == 0, pooled.output
    with api.app.state.sessions() as session:
        row = session.scalars(
            select(SourceCalibration).where(SourceCalibration.source == ALL_SOURCES)
        ).one()
    default = {Task.QUESTION: TaskOverlay(row.temperature, row.threshold)}
    _ingest(api, "brand-c", texts, offset=100)
    for c, b in zip(_stored(api, "brand-c"), plain, strict=True):
        expected = apply_overlay(_prediction(b), default)
        assert c.scores["question"] == pytest.approx(expected.scores[Task.QUESTION])
        assert c.labels["question"] == expected.labels[Task.QUESTION]


def test_a_sources_own_tasks_override_the_all_sources_calibration(api: Api) -> None:
    def row(source: str, task: str, temperature: float, version: str = "v1") -> SourceCalibration:
        return SourceCalibration(
            source=source, task=task, temperature=temperature, threshold=None,
            model_name="m", model_version=version, labels_used=40, report={},
        )  # fmt: skip

    with api.app.state.sessions() as session:
        session.add_all(
            [
                row(ALL_SOURCES, "question", 2.0),
                row(ALL_SOURCES, "sentiment", 3.0),
                row("brand-a", "sentiment", 0.5),
                row("brand-b", "question", 9.0, version="v0"),
            ]
        )
        session.commit()
        overlays = load_overlays(session, ["brand-a", "brand-b", "brand-c"], "m", "v1")
        assert overlays["brand-a"] == {
            Task.QUESTION: TaskOverlay(2.0),
            Task.SENTIMENT: TaskOverlay(0.5),
        }
        assert (
            overlays["brand-b"]
            == overlays["brand-c"]
            == {
                Task.QUESTION: TaskOverlay(2.0),
                Task.SENTIMENT: TaskOverlay(3.0),
            }
        )
        assert load_overlays(session, ["brand-b"], "m", "v0") == {
            "brand-b": {Task.QUESTION: TaskOverlay(9.0)}
        }
        assert load_overlays(session, [], "m", "v1") == {}
