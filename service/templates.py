"""Reply templates: safe rendering of variables, intents from model labels, and ranking.

Pure functions over plain data; the database and the embedder are passed in by the caller.
Rendering never evaluates anything: ``{name}`` and ``{name|fallback}`` are replaced by plain
text, every other brace stays as written, and an unknown variable stays visibly unfilled.
"""

from __future__ import annotations

import math
import re
import tomllib
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,40})(?:\|([^{}|]{0,200}))?\}")
MAX_VALUE_CHARS = 200
DEFAULT_LIBRARY = Path(__file__).parent / "default_templates.toml"


class Intent(StrEnum):
    QUESTION = "question"
    COMPLAINT = "complaint"
    PRAISE = "praise"
    ABUSE = "abuse"
    GENERIC = "generic"


@dataclass(frozen=True)
class Rendered:
    text: str
    missing: list[str]


@dataclass(frozen=True)
class TemplateData:
    id: int
    name: str
    intents: list[str]
    body: str
    examples: list[str] = field(default_factory=list)
    usage: int = 0


@dataclass(frozen=True)
class Suggestion:
    template: TemplateData
    text: str
    score: float
    reasons: list[str]
    missing: list[str]


def _clean(value: object) -> str:
    text = "".join(ch for ch in str(value) if unicodedata.category(ch)[0] != "C" or ch == " ")
    return text[:MAX_VALUE_CHARS]


def render(body: str, variables: Mapping[str, object]) -> Rendered:
    """Fill ``{name}``/``{name|fallback}``; values are plain text, never code or format specs."""
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name, fallback = match.group(1), match.group(2)
        value = variables.get(name)
        if value is not None and _clean(value).strip():
            return _clean(value)
        if fallback is not None:
            return fallback
        missing.append(name)
        return match.group(0)

    return Rendered(VARIABLE.sub(replace, body), missing)


def intents_of(scores: Mapping[str, Mapping[str, float]]) -> list[tuple[Intent, float]]:
    """Each intent with the probability that it is what the comment needs, strongest first.

    A reply answers a question first; a comment that asks nothing needs an apology when it is
    negative, thanks when positive, and a generic acknowledgement otherwise; so these four
    share the probability mass (``P(question)``, then ``(1 - P(question)) * P(sentiment)``).
    Abuse is scored beside them from the offensive and hate heads.
    """

    def p(task: str, label: str) -> float:
        return float(scores.get(task, {}).get(label, 0.0))

    question = p("question", "question")
    rest = 1.0 - question
    found = [
        (Intent.QUESTION, question),
        (Intent.COMPLAINT, rest * p("sentiment", "negative")),
        (Intent.PRAISE, rest * p("sentiment", "positive")),
        (Intent.GENERIC, rest * p("sentiment", "neutral")),
        (Intent.ABUSE, max(p("offensive", "offensive"), p("hate", "hate"))),
    ]
    return sorted(found, key=lambda item: -item[1])


@dataclass(frozen=True)
class RankingWeights:
    intent: float = 1.0
    similarity: float = 0.8
    usage: float = 0.1


def rank(
    templates: Sequence[TemplateData],
    intents: Sequence[tuple[Intent, float]],
    similarity: np.ndarray,
    variables: Mapping[str, object],
    k: int,
    weights: RankingWeights = RankingWeights(),
) -> list[Suggestion]:
    """Top ``k`` templates by the probability that they answer the comment's need, similarity
    to their examples and moderators' usage."""
    probability = dict(intents)
    scored = []
    for template, sim in zip(templates, similarity, strict=True):
        answered = sorted(
            ((Intent(i), probability.get(Intent(i), 0.0)) for i in template.intents),
            key=lambda item: -item[1],
        )
        needs = [p for intent, p in answered if intent is not Intent.ABUSE]
        if len(needs) < len(answered):  # an abuse template fits abusive comments only
            intent_score = probability.get(Intent.ABUSE, 0.0) * (sum(needs) if needs else 1.0)
        else:
            intent_score = sum(needs)
        reasons = []
        if intent_score > 0:
            covered = ", ".join(f"{intent.value} (p={p:.2f})" for intent, p in answered)
            reasons.append(f"answers the comment's intents {covered}")
        if sim > 0:
            reasons.append(f"similar to its examples (cosine {sim:.2f})")
        usage = math.log1p(template.usage)
        if template.usage:
            reasons.append(f"sent {template.usage} times by moderators for this intent")
        score = (
            weights.intent * intent_score + weights.similarity * float(sim) + weights.usage * usage
        )
        scored.append((score, template, reasons))
    scored.sort(key=lambda item: (-item[0], item[1].id))
    suggestions = []
    for score, template, reasons in scored[:k]:
        rendered = render(template.body, variables)
        suggestions.append(
            Suggestion(template, rendered.text, round(score, 4), reasons, rendered.missing)
        )
    return suggestions


def load_library(path: Path = DEFAULT_LIBRARY) -> list[dict[str, Any]]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    templates: list[dict[str, Any]] = data["templates"]
    for entry in templates:
        for intent in entry["intents"]:
            Intent(intent)
    return templates
