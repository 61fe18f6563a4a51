from pathlib import Path

import pytest

from commentdesk.settings import PROJECT_ROOT
from model.tasks import Task
from service.policy import Action, PolicyError, load_policy, match_tokens, parse_policy, route
from training.feedback import load_feedback

POLICY = load_policy(PROJECT_ROOT / "configs" / "policy.toml")


def scores(
    offensive: float = 0.0, hate: float = 0.0, question: float = 0.0, negative: float = 0.0
) -> dict[Task, dict[str, float]]:
    return {
        Task.OFFENSIVE: {"not-offensive": 1 - offensive, "offensive": offensive},
        Task.HATE: {"not-hate": 1 - hate, "hate": hate},
        Task.QUESTION: {"not-question": 1 - question, "question": question},
        Task.SENTIMENT: {"negative": negative, "neutral": 1 - negative, "positive": 0.0},
    }


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("FUUUCK", ["fuck"]),
        ("Crème brûlée", ["creme", "brule"]),
        ("sh1t b@stard $hit", ["shit", "bastard", "shit"]),
        ("@brand in 2024!", ["brand", "in"]),
        ("Scunthorpe", ["scunthorpe"]),
        ("𝐈𝐃𝐈𝐎𝐓 🄸🄳", ["idiot", "id"]),  # styled capitals
    ],
)
def test_match_tokens_normalises_evasions(text: str, tokens: list[str]) -> None:
    assert match_tokens(text) == tokens


def test_word_lists_match_whole_words_only() -> None:
    assert route(POLICY, "greetings from Scunthorpe", scores()).action is Action.NONE
    assert (
        route(POLICY, "you absolute C.U.N.T", scores()).action is Action.NONE
    )  # dotted spelling: not handled
    assert route(POLICY, "you CUUUNT", scores()).action is Action.HIDE
    assert route(POLICY, "this is a sc4m", scores()).action is Action.REVIEW


def test_most_severe_rule_wins_and_reasons_say_why() -> None:
    routing = route(POLICY, "hello", scores(offensive=0.95, question=0.9))
    assert routing.action is Action.HIDE
    assert any("offensive=offensive p=0.95" in reason for reason in routing.reasons)
    assert route(POLICY, "hello", scores(offensive=0.6)).action is Action.REVIEW
    assert route(POLICY, "hello", scores(question=0.7)).action is Action.REPLY
    assert route(POLICY, "hello", scores(negative=0.8)).action is Action.REPLY
    assert route(POLICY, "hello", scores()).action is Action.NONE


def test_priority_orders_severity_questions_and_negativity() -> None:
    abusive = route(POLICY, "x", scores(offensive=0.9)).priority
    question = route(POLICY, "x", scores(question=0.9)).priority
    complaint = route(POLICY, "x", scores(negative=0.9)).priority
    assert abusive > question > complaint > 0
    assert route(POLICY, "x", scores(), escalated=True).priority == 1000


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {
                "rules": [
                    {"task": "toxicity", "label": "x", "min_probability": 0.5, "action": "hide"}
                ]
            },
            "unknown task",
        ),
        (
            {
                "rules": [
                    {"task": "hate", "label": "hateful", "min_probability": 0.5, "action": "hide"}
                ]
            },
            "unknown label",
        ),
        (
            {
                "rules": [
                    {"task": "hate", "label": "hate", "min_probability": 1.5, "action": "hide"}
                ]
            },
            "not in",
        ),
        (
            {"rules": [{"task": "hate", "label": "hate", "min_probability": 0.5, "action": "ban"}]},
            "ban",
        ),
        ({"words": {"banned": ["!!!"]}}, "no letters"),
        ({"priority": {"colour": 1}}, "colour"),
    ],
)
def test_bad_policies_are_rejected(data: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(PolicyError, match=message):
        parse_policy(data)


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy(tmp_path / "none.toml")


def test_feedback_files_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text(
        '{"text": "hi", "task": "sentiment", "label": "positive"}\n{"text": "x", "task": "sentiment", "label": "great"}\n'
    )
    with pytest.raises(ValueError, match=r"f\.jsonl:2"):
        load_feedback(path)
    path.write_text('{"text": "hi", "task": "sentiment", "label": "positive"}\n')
    assert load_feedback(path).iloc[0].to_dict() == {
        "text": "hi",
        "task": "sentiment",
        "label": "positive",
        "split": "train",
        "source": "feedback",
    }
