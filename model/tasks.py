"""The fixed set of tasks and their label names, shared by training, evaluation and serving."""

from __future__ import annotations

from enum import StrEnum


class Task(StrEnum):
    SENTIMENT = "sentiment"
    OFFENSIVE = "offensive"
    HATE = "hate"
    QUESTION = "question"
    EMOTION = "emotion"
    IRONY = "irony"


LABELS: dict[Task, tuple[str, ...]] = {
    Task.SENTIMENT: ("negative", "neutral", "positive"),
    Task.OFFENSIVE: ("not-offensive", "offensive"),
    Task.HATE: ("not-hate", "hate"),
    Task.QUESTION: ("not-question", "question"),
    Task.EMOTION: ("anger", "joy", "optimism", "sadness"),
    Task.IRONY: ("non-irony", "irony"),
}


def labels_of(task: Task) -> tuple[str, ...]:
    return LABELS[task]


def is_binary(task: Task) -> bool:
    return len(LABELS[task]) == 2


def parse_task(name: str) -> Task:
    """Turn a user-supplied name into a Task, failing with the list of known tasks."""
    try:
        return Task(name)
    except ValueError:
        known = ", ".join(t.value for t in Task)
        raise ValueError(f"unknown task {name!r}; known tasks: {known}") from None
