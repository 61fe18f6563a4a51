"""Moderator decisions as labelled training rows, in the catalog's schema."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from model.tasks import LABELS, Task

FEEDBACK_SOURCE = "feedback"
COLUMNS = ["text", "task", "label", "split", "source"]


def load_feedback(path: Path) -> pd.DataFrame:
    """Read a ``commentdesk feedback export`` file; every row must carry a known task and label."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            task = Task(item["task"])
            if item["label"] not in LABELS[task] or not str(item["text"]).strip():
                raise ValueError(f"label {item['label']!r} is not one of {LABELS[task]}")
        except (json.JSONDecodeError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}:{number}: {exc}") from exc
        rows.append((item["text"], task.value, item["label"], "train", FEEDBACK_SOURCE))
    return pd.DataFrame(rows, columns=COLUMNS)
