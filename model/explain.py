"""Word-level explanations by occlusion: how much each word holds up the predicted label.

Occlusion works with every runtime (TF-IDF, PyTorch, int8 ONNX) because it only needs the scorer's
``predict``: the comment is scored once whole and once without each word, in one batch. A word's
weight is the drop of the predicted label's probability when the word is removed; a negative
weight means the word argues against the label. Offsets index the text exactly as it was sent
(Python string indices, i.e. Unicode code points), so a page can highlight ``text[begin:end]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from model.scorer import Prediction
from model.tasks import Task

# A word: letters and digits with inner apostrophes and hyphens, @mentions and #hashtags kept
# whole; any other run of visible characters (punctuation, emoji) is a unit of its own, because
# "?" and "!!!" and emoji carry questions and tone.
_WORD = re.compile(r"[@#]?\w+(?:['’-]\w+)*|[^\w\s]+")

MAX_UNITS = 48


@dataclass(frozen=True)
class Unit:
    """A span of the text that is removed as one: a word, or a phrase in a long comment."""

    begin: int
    end: int


@dataclass(frozen=True)
class WordWeight:
    text: str
    begin: int
    end: int
    weight: float


@dataclass(frozen=True)
class Explanation:
    label: str
    words: tuple[WordWeight, ...]

    def top(self, k: int) -> list[WordWeight]:
        """The ``k`` words that hold up the label most (positive weights only)."""
        ranked = sorted(self.words, key=lambda w: w.weight, reverse=True)
        return [w for w in ranked[:k] if w.weight > 0]


def units_of(text: str, max_units: int = MAX_UNITS) -> list[Unit]:
    """The words of ``text``; past ``max_units`` words, runs of neighbouring words form a unit,
    so a long comment costs at most ``max_units + 1`` model rows."""
    words = [Unit(m.start(), m.end()) for m in _WORD.finditer(text)]
    if len(words) <= max_units:
        return words
    size = -(-len(words) // max_units)
    return [
        Unit(words[i].begin, words[min(i + size, len(words)) - 1].end)
        for i in range(0, len(words), size)
    ]


def without(text: str, unit: Unit) -> str:
    return text[: unit.begin] + text[unit.end :]


def occlusion_inputs(text: str, units: Sequence[Unit]) -> list[str]:
    """The rows to score: the text itself first, then the text without each unit."""
    return [text, *(without(text, unit) for unit in units)]


def attributions(
    text: str,
    units: Sequence[Unit],
    predictions: Sequence[Prediction],
    tasks: Sequence[Task],
) -> dict[Task, Explanation]:
    """Weights from the predictions of :func:`occlusion_inputs`, for the whole text's labels."""
    if len(predictions) != len(units) + 1:
        raise ValueError(f"{len(predictions)} predictions for {len(units)} units plus the text")
    whole, occluded = predictions[0], predictions[1:]
    explained = {}
    for task in tasks:
        label = whole.labels[task]
        base = whole.scores[task][label]
        words = tuple(
            WordWeight(
                text=text[unit.begin : unit.end],
                begin=unit.begin,
                end=unit.end,
                weight=round(base - prediction.scores[task][label], 6),
            )
            for unit, prediction in zip(units, occluded, strict=True)
        )
        explained[task] = Explanation(label=label, words=words)
    return explained


def explain(
    predict: Callable[[Sequence[str]], list[Prediction]],
    text: str,
    tasks: Sequence[Task],
    max_units: int = MAX_UNITS,
) -> dict[Task, Explanation]:
    """Explain every task's label for one comment with one batched model call."""
    units = units_of(text, max_units)
    return attributions(text, units, predict(occlusion_inputs(text, units)), tasks)
