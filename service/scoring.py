"""Scoring shared by the HTTP API and batch files, so both return exactly the same fields."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from model.errors import InvalidTextError
from model.explain import Explanation, Occlusion, feed_round, next_round
from model.scorer import Prediction, check_text
from model.tasks import Task
from service.batching import MicroBatcher
from service.errors import InvalidComment, TooManyComments


def prediction_fields(prediction: Prediction) -> dict[str, Any]:
    """``labels`` and ``scores`` keyed by task name, as the API returns them."""
    return {
        "labels": {task.value: label for task, label in prediction.labels.items()},
        "scores": {task.value: dict(probs) for task, probs in prediction.scores.items()},
    }


def check_texts(texts: Sequence[object], max_chars: int, max_comments: int) -> list[str]:
    """Validate every text first, so a request is either scored whole or rejected whole."""
    if len(texts) > max_comments:
        raise TooManyComments(f"{len(texts)} comments in one request; the limit is {max_comments}")
    checked = []
    for index, text in enumerate(texts):
        try:
            checked.append(check_text(text, max_chars))
        except InvalidTextError as exc:
            raise InvalidComment(index, f"comment {index}: {exc}") from exc
    return checked


async def explain_texts(
    batcher: MicroBatcher, texts: Sequence[str], limit: int, max_rows: int
) -> tuple[list[Prediction], list[dict[Task, Explanation]]]:
    """Explain comments through the micro-batcher, one call per occlusion round; also return
    each comment's own prediction (from the first round)."""
    if len(texts) > limit:
        raise TooManyComments(f"{len(texts)} comments with explain=true; the limit is {limit}")
    jobs = [Occlusion(text, batcher.scorer.tasks, max_rows) for text in texts]
    while True:
        pending, rows = next_round(jobs)
        if not pending:
            return [job.prediction for job in jobs], [job.result() for job in jobs]
        feed_round(pending, await batcher.predict(rows))
