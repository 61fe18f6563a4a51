"""Word-level explanations by occlusion: how much each word holds up the predicted label.

Occlusion works with every runtime (TF-IDF, PyTorch, int8 ONNX) because it only needs the scorer's
``predict``: the comment is scored whole and without each word. A word's weight is the drop of the
predicted label's probability when the word is removed; a negative weight means the word argues
against the label. Offsets index the text exactly as it was sent (Python string indices, i.e.
Unicode code points), so a page can highlight ``text[begin:end]``.

The cost is one model row per word. A comment with more words than the row budget is explained
coarse to fine: first runs of neighbouring words, then the runs that matter most for any task
word by word, so the words behind a label are still found one by one while the cost stays
bounded (the rest keep the weight of their run).
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

# Model rows per explanation, the whole comment included: p95 126-134 ms with MiniLM int8 on two
# cores (docs/benchmarks.md); the service's setting api.explain_max_rows.
MAX_ROWS = 10


@dataclass(frozen=True)
class Unit:
    """A span of the text that is removed as one: a word, or a run of words."""

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


def words_of(text: str) -> list[Unit]:
    return [Unit(m.start(), m.end()) for m in _WORD.finditer(text)]


def runs(units: Sequence[Unit], count: int) -> list[Unit]:
    """At most ``count`` runs of neighbouring units, as even as possible, covering all of them."""
    size = -(-len(units) // max(1, count))
    return [
        Unit(units[i].begin, units[min(i + size, len(units)) - 1].end)
        for i in range(0, len(units), size)
    ]


def without(text: str, unit: Unit) -> str:
    return text[: unit.begin] + text[unit.end :]


class Occlusion:
    """The explanation of one comment as at most two rounds of rows to score.

    ``rows()`` gives what to score next (empty when done), ``feed()`` takes its predictions:
    callers batch the rows of many comments into one model call per round.
    """

    def __init__(self, text: str, tasks: Sequence[Task], max_rows: int = MAX_ROWS):
        if max_rows < 3:
            raise ValueError("max_rows must be at least 3: the comment and two units")
        self.text, self.tasks, self.max_rows = text, tuple(tasks), max_rows
        self.words = words_of(text)
        fits = len(self.words) + 1 <= max_rows
        self._pending = self.words if fits else runs(self.words, (max_rows - 1) // 2)
        self._rows = [text, *(without(text, unit) for unit in self._pending)]
        self._base: Prediction | None = None
        self._weights: dict[Unit, dict[Task, float]] = {}
        self._refined = fits

    def rows(self) -> list[str]:
        return self._rows

    @property
    def prediction(self) -> Prediction:
        """The whole comment's prediction (scored in the first round)."""
        if self._base is None:
            raise RuntimeError("the comment has not been scored yet")
        return self._base

    def feed(self, predictions: Sequence[Prediction]) -> None:
        if len(predictions) != len(self._rows):
            raise ValueError(f"{len(predictions)} predictions for {len(self._rows)} rows")
        if self._base is None:
            self._base, predictions = predictions[0], predictions[1:]
        base = self._base
        for unit, prediction in zip(self._pending, predictions, strict=True):
            self._weights[unit] = {
                task: base.scores[task][base.labels[task]]
                - prediction.scores[task][base.labels[task]]
                for task in self.tasks
            }
        self._rows, self._pending = [], []
        if not self._refined:
            self._refined = True
            self._refine()

    def _refine(self) -> None:
        """Replace the runs that matter most (largest weight for any task) by their words, as
        many as the rows left allow; a run longer than that is cut into shorter runs."""
        budget = self.max_rows - 1 - len(self._weights)
        ranked = sorted(self._weights, key=lambda u: -max(map(abs, self._weights[u].values())))
        for run in ranked:
            inside = [w for w in self.words if run.begin <= w.begin and w.end <= run.end]
            if len(inside) < 2 or budget < 2:
                continue
            parts = inside if len(inside) <= budget else runs(inside, budget)
            del self._weights[run]
            self._pending += parts
            budget -= len(parts)
        self._rows = [without(self.text, unit) for unit in self._pending]

    def result(self) -> dict[Task, Explanation]:
        if self._rows:
            raise RuntimeError("the explanation still has rows to score")
        base = self.prediction
        units = sorted(self._weights, key=lambda u: u.begin)
        return {
            task: Explanation(
                label=base.labels[task],
                words=tuple(
                    WordWeight(
                        self.text[u.begin : u.end], u.begin, u.end, round(self._weights[u][task], 6)
                    )
                    for u in units
                ),
            )
            for task in self.tasks
        }


def next_round(jobs: Sequence[Occlusion]) -> tuple[list[Occlusion], list[str]]:
    """The jobs with rows left and all their rows, to score in one model call."""
    pending = [job for job in jobs if job.rows()]
    return pending, [row for job in pending for row in job.rows()]


def feed_round(pending: Sequence[Occlusion], predictions: Sequence[Prediction]) -> None:
    start = 0
    for job in pending:
        count = len(job.rows())
        job.feed(predictions[start : start + count])
        start += count


def explain_many(
    predict: Callable[[Sequence[str]], list[Prediction]],
    texts: Sequence[str],
    tasks: Sequence[Task],
    max_rows: int = MAX_ROWS,
) -> list[Occlusion]:
    """Explain several comments with one model call per round (two rounds at most)."""
    jobs = [Occlusion(text, tasks, max_rows) for text in texts]
    while True:
        pending, rows = next_round(jobs)
        if not pending:
            return jobs
        feed_round(pending, predict(rows))


def explain(
    predict: Callable[[Sequence[str]], list[Prediction]],
    text: str,
    tasks: Sequence[Task],
    max_rows: int = MAX_ROWS,
) -> dict[Task, Explanation]:
    """Explain every task's label for one comment."""
    return explain_many(predict, [text], tasks, max_rows)[0].result()
