"""Word-level explanations: units and offsets, occlusion weights, and /v1/score's explain flag."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from fastapi.testclient import TestClient

from model.explain import explain, occlusion_inputs, units_of
from model.scorer import Prediction, Scorer
from model.tasks import Task


def keyword_model(texts: Sequence[str]) -> list[Prediction]:
    """A scorer whose offensive score rises by 0.6 with "idiots" and 0.2 with "!!" only."""
    out = []
    for text in texts:
        p = 0.1 + 0.6 * ("idiots" in text) + 0.2 * ("!!" in text)
        label = "offensive" if p >= 0.5 else "not-offensive"
        out.append(
            Prediction(
                labels={Task.OFFENSIVE: label},
                scores={Task.OFFENSIVE: {"not-offensive": 1 - p, "offensive": p}},
            )
        )
    return out


def test_units_are_words_mentions_and_punctuation_with_exact_offsets() -> None:
    text = "@acme you're idiots!! 😡 #fail it's over-priced"
    units = units_of(text)
    assert [text[u.begin : u.end] for u in units] == [
        "@acme", "you're", "idiots", "!!", "😡", "#fail", "it's", "over-priced",
    ]  # fmt: skip


def test_a_long_comment_is_cut_into_at_most_max_units_runs_covering_every_word() -> None:
    text = " ".join(f"w{i}" for i in range(500))
    units = units_of(text, max_units=48)
    assert len(units) <= 48
    covered = " ".join(text[u.begin : u.end] for u in units)
    assert covered == text, "the runs cover every word, in order, with nothing left out"
    assert all(a.end < b.begin for a, b in itertools.pairwise(units))


def test_occlusion_removes_exactly_one_unit_per_row() -> None:
    text = "where is my refund?"
    units = units_of(text)
    rows = occlusion_inputs(text, units)
    assert rows[0] == text
    assert rows[1:] == [" is my refund?", "where  my refund?", "where is  refund?",
                        "where is my ?", "where is my refund"]  # fmt: skip


def test_the_word_that_makes_the_label_gets_the_weight() -> None:
    explained = explain(keyword_model, "you are idiots!! honestly", [Task.OFFENSIVE])
    offensive = explained[Task.OFFENSIVE]
    assert offensive.label == "offensive"
    weights = {w.text: w.weight for w in offensive.words}
    assert weights["idiots"] == pytest.approx(0.6)
    assert weights["!!"] == pytest.approx(0.2)
    assert weights["you"] == weights["honestly"] == 0
    assert [w.text for w in offensive.top(3)] == ["idiots", "!!"], "only words that hold it up"


def test_weights_are_the_drop_measured_by_the_real_scorer(tiny_scorer: Scorer) -> None:
    text = "why is my parcel late again, this is the worst service"
    explained = explain(tiny_scorer.predict, text, tiny_scorer.tasks)
    assert set(explained) == set(tiny_scorer.tasks)
    whole = tiny_scorer.predict([text])[0]
    for task, explanation in explained.items():
        label = whole.labels[task]
        assert explanation.label == label
        for word in explanation.words[:3]:
            without = text[: word.begin] + text[word.end :]
            drop = whole.scores[task][label] - tiny_scorer.predict([without])[0].scores[task][label]
            assert word.weight == pytest.approx(drop, abs=1e-5)
            assert text[word.begin : word.end] == word.text


def test_score_explains_every_task_when_asked(client: TestClient) -> None:
    text = "@AcmeHelp you are useless idiots, where is my refund?"
    plain = client.post("/v1/score", json={"text": text}).json()["results"][0]
    assert plain["explanations"] is None
    result = client.post("/v1/score", json={"text": text, "explain": True}).json()["results"][0]
    assert result["labels"] == plain["labels"]
    for task, explanation in result["explanations"].items():
        assert explanation["label"] == result["labels"][task]
        assert [w["text"] for w in explanation["words"]] == [
            text[w["begin"] : w["end"]] for w in explanation["words"]
        ]
        assert len(explanation["words"]) == 11
        assert any(w["weight"] != 0 for w in explanation["words"])


def test_explained_comments_are_limited_and_validated(client: TestClient) -> None:
    many = [{"id": str(i), "text": f"comment {i}"} for i in range(17)]
    response = client.post("/v1/score", json={"comments": many, "explain": True})
    assert response.status_code == 413
    assert "explain" in response.json()["error"]["message"]
    ok = client.post("/v1/score", json={"comments": many[:16], "explain": True})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 16
    assert client.post("/v1/score", json={"text": "hi", "explain": "yes"}).status_code == 422
    empty = client.post("/v1/score", json={"text": "   ", "explain": True})
    assert empty.status_code == 422
    emoji_only = client.post("/v1/score", json={"text": "😡😡😡", "explain": True})
    assert emoji_only.status_code == 200
    words = emoji_only.json()["results"][0]["explanations"]["sentiment"]["words"]
    assert [w["text"] for w in words] == ["😡😡😡"]
