"""The moderation policy: pure functions from a comment's scores and words to a queue action.

Configured in a TOML file (``configs/policy.toml``); nothing here touches HTTP or the database, so
the same policy routes live comments and batch exports.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from model.tasks import LABELS, Task, parse_task


class Action(StrEnum):
    HIDE = "hide"
    REVIEW = "review"
    REPLY = "reply"
    NONE = "none"


SEVERITY = {Action.HIDE: 3, Action.REVIEW: 2, Action.REPLY: 1, Action.NONE: 0}


class PolicyError(ValueError):
    """The policy file is missing or malformed."""


@dataclass(frozen=True)
class Rule:
    task: Task
    label: str
    min_probability: float
    action: Action


@dataclass(frozen=True)
class Weights:
    severity: float = 600
    question: float = 200
    negative: float = 150
    escalated: float = 1000


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    banned: tuple[tuple[str, ...], ...] = ()
    suspect: tuple[tuple[str, ...], ...] = ()
    weights: Weights = field(default_factory=Weights)


@dataclass(frozen=True)
class Routing:
    action: Action
    priority: int
    reasons: list[str]


_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"}
)
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_REPEAT = re.compile(r"(.)\1+")


def match_tokens(text: str) -> list[str]:
    """Words of a text in the form word lists are matched in.

    Lowercase, accents stripped, leetspeak undone and letter runs squeezed ("fuuuck" -> "fuck",
    which also turns "hello" into "helo": both sides are squeezed the same way). Only whole words
    match, so "Scunthorpe" never matches a banned substring.
    """
    # Lowercase after NFKD: styled capitals (𝐈𝐃𝐈𝐎𝐓, 🄸🄳) only become plain capitals there.
    decomposed = unicodedata.normalize("NFKD", text).lower()
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    words: list[str] = []
    for raw in stripped.split():
        raw = raw.lstrip("@#").rstrip("!?.,;:)\"'")
        # Leetspeak only in tokens that have letters: "b@stard" and "sh1t", not "2024".
        if any(ch.isalpha() for ch in raw):
            raw = raw.translate(_LEET)
        words.extend(_REPEAT.sub(r"\1", word) for word in _WORD.findall(raw))
    return words


def _phrase(entry: str) -> tuple[str, ...]:
    tokens = tuple(match_tokens(entry))
    if not tokens:
        raise PolicyError(f"word list entry {entry!r} has no letters")
    return tokens


def find_phrases(tokens: list[str], phrases: tuple[tuple[str, ...], ...]) -> list[str]:
    found = []
    for phrase in phrases:
        size = len(phrase)
        if any(tuple(tokens[i : i + size]) == phrase for i in range(len(tokens) - size + 1)):
            found.append(" ".join(phrase))
    return found


def route(
    policy: Policy, text: str, scores: dict[Task, dict[str, float]], escalated: bool = False
) -> Routing:
    """The action, priority and human-readable reasons for one scored comment."""
    action, reasons = Action.NONE, []
    for rule in policy.rules:
        probability = scores.get(rule.task, {}).get(rule.label)
        if probability is not None and probability >= rule.min_probability:
            reasons.append(
                f"{rule.task.value}={rule.label} p={probability:.2f} >= {rule.min_probability:.2f}: {rule.action.value}"
            )
            action = max(action, rule.action, key=SEVERITY.__getitem__)
    tokens = match_tokens(text)
    for word in find_phrases(tokens, policy.banned):
        reasons.append(f"banned word {word!r}: hide")
        action = Action.HIDE
    for word in find_phrases(tokens, policy.suspect):
        reasons.append(f"suspect word {word!r}: review")
        action = max(action, Action.REVIEW, key=SEVERITY.__getitem__)

    def p(task: Task, label: str) -> float:
        return scores.get(task, {}).get(label, 0.0)

    weights = policy.weights
    priority = (
        weights.severity * max(p(Task.OFFENSIVE, "offensive"), p(Task.HATE, "hate"))
        + weights.question * p(Task.QUESTION, "question")
        + weights.negative * p(Task.SENTIMENT, "negative")
        + (weights.escalated if escalated else 0.0)
    )
    return Routing(action=action, priority=round(priority), reasons=reasons)


def parse_policy(data: dict[str, Any]) -> Policy:
    try:
        rules = []
        for entry in data.get("rules", []):
            task = parse_task(entry["task"])
            if entry["label"] not in LABELS[task]:
                raise PolicyError(
                    f"rule for {task}: unknown label {entry['label']!r}; labels: {LABELS[task]}"
                )
            probability = float(entry["min_probability"])
            if not 0.0 <= probability <= 1.0:
                raise PolicyError(
                    f"rule for {task}: min_probability {probability} is not in [0, 1]"
                )
            rules.append(Rule(task, entry["label"], probability, Action(entry["action"])))
        words = data.get("words", {})
        return Policy(
            rules=tuple(rules),
            banned=tuple(_phrase(w) for w in words.get("banned", [])),
            suspect=tuple(_phrase(w) for w in words.get("suspect", [])),
            weights=Weights(**data.get("priority", {})),
        )
    except PolicyError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise PolicyError(f"invalid policy: {exc!r}") from exc


def load_policy(path: Path) -> Policy:
    try:
        return parse_policy(tomllib.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise PolicyError(f"policy file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: {exc}") from exc
