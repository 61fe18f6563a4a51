"""Word-level explanations: units and offsets, occlusion weights, and /v1/score's explain flag."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from fastapi.testclient import TestClient

from model.explain import Explanation, Occlusion, WordWeight, explain, words_of
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
    assert [text[u.begin : u.end] for u in words_of(text)] == [
        "@acme", "you're", "idiots", "!!", "😡", "#fail", "it's", "over-priced",
    ]  # fmt: skip


def test_a_short_comment_is_one_round_removing_each_word_once() -> None:
    text = "where is my refund?"
    job = Occlusion(text, [Task.OFFENSIVE], max_rows=16)
    assert job.rows() == [text, " is my refund?", "where  my refund?", "where is  refund?",
                          "where is my ?", "where is my refund"]  # fmt: skip
    job.feed(keyword_model(job.rows()))
    assert job.rows() == []
    assert [w.text for w in job.result()[Task.OFFENSIVE].words] == [
        "where",
        "is",
        "my",
        "refund",
        "?",
    ]


@pytest.mark.parametrize("words", [20, 40, 500])
def test_a_long_comment_is_explained_coarse_to_fine_within_the_row_budget(words: int) -> None:
    filler = [f"w{i}" for i in range(words)]
    filler[words // 3] = "idiots"
    text = " ".join(filler)
    job = Occlusion(text, [Task.OFFENSIVE], max_rows=16)
    scored = 0
    while rows := job.rows():
        scored += len(rows)
        job.feed(keyword_model(rows))
    assert scored <= 16
    explained = job.result()[Task.OFFENSIVE]
    assert " ".join(w.text for w in explained.words) == text, "every word, in order, once"
    best = explained.top(1)[0]
    assert best.weight == pytest.approx(0.6)
    if words <= 40:
        assert best.text == "idiots", "the run that matters is refined down to the word"
    else:
        assert "idiots" in best.text and len(best.text.split()) <= 9  # 72-word run cut in 8


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
        spans = [(w["begin"], w["end"]) for w in explanation["words"]]
        assert spans == sorted(spans)
        inside = [sum(b <= w.begin and w.end <= e for b, e in spans) for w in words_of(text)]
        assert inside == [1] * 11, "every word in exactly one unit"
        assert len(spans) < 11, "11 words are more than the default row budget: coarse to fine"
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


def test_highlight_marks_the_top_words_of_alerting_labels_only() -> None:
    from service.ui.routes import Segment, highlight

    text = "you idiots, why?"
    words = words_of(text)
    weights = {"you": 0.01, "idiots": 0.4, ",": 0.03, "why": 0.2, "?": 0.5}

    def explanation(label: str) -> Explanation:
        return Explanation(
            label,
            tuple(
                WordWeight(text[u.begin : u.end], u.begin, u.end, weights[text[u.begin : u.end]])
                for u in words
            ),
        )

    segments = highlight(
        text,
        {
            Task.OFFENSIVE: explanation("offensive"),
            Task.QUESTION: explanation("question"),
            Task.HATE: explanation("not-hate"),  # not an alert: its words stay plain
        },
        top=2,
    )
    assert "".join(s.text for s in segments) == text
    assert [s for s in segments if s.reasons] == [
        Segment("idiots", ("offensive +0.40", "question +0.40")),
        Segment("?", ("offensive +0.50", "question +0.50")),
    ]


def test_deleting_the_top_words_beats_deleting_random_words() -> None:
    from training.faithfulness import deletion_test

    class KeywordScorer:
        name, version, tasks = "keywords", "1", (Task.OFFENSIVE,)

        def predict(self, texts: Sequence[str]) -> list[Prediction]:
            return keyword_model(texts)

    texts = [f"honestly you are idiots!! and {i} more words here" for i in range(20)]
    result = deletion_test(KeywordScorer(), texts, Task.OFFENSIVE, "synthetic", k=3)
    assert result.comments == 20
    assert result.top_drop == pytest.approx(0.8)  # "idiots" and "!!" are always in the top 3
    assert result.random_drop < result.top_drop and result.margin > 0.3
    assert result.margin == pytest.approx(result.top_drop - result.random_drop)
