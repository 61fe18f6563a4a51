"""Are the explanations faithful? Deleting the top-k attributed words must lower the predicted
label's probability more than deleting as many random words (the "comprehensiveness" test of
ERASER, DeYoung et al. 2020, against a random baseline).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.explain import MAX_ROWS, Unit, explain_many, words_of
from model.scorer import Scorer
from model.tasks import Task


@dataclass(frozen=True)
class Faithfulness:
    task: Task
    split: str
    comments: int
    top_drop: float
    random_drop: float
    margin: float
    margin_ci95: float
    margin_positive_share: float


def without_units(text: str, units: Sequence[Unit]) -> str:
    for unit in sorted(units, key=lambda u: u.begin, reverse=True):
        text = text[: unit.begin] + text[unit.end :]
    return text


def deletion_test(
    scorer: Scorer,
    texts: Sequence[str],
    task: Task,
    split: str,
    k: int = 3,
    seed: int = 0,
    max_rows: int = MAX_ROWS,
    batch_comments: int = 16,
) -> Faithfulness:
    """Score each comment (with at least ``k + 2`` words) without its top-k attributed units and
    without as many random words as those units hold (a unit of a long comment may be a run of
    words); the margin is the mean difference of the two probability drops."""
    rng = random.Random(seed)
    top_drops, random_drops = [], []
    eligible = [text for text in texts if len(words_of(text)) >= k + 2]
    for start in range(0, len(eligible), batch_comments):
        jobs = explain_many(
            scorer.predict, eligible[start : start + batch_comments], [task], max_rows
        )
        deletions, bases = [], []
        for job in jobs:
            explanation = job.result()[task]
            top = sorted(explanation.words, key=lambda w: -w.weight)[:k]
            removed = [Unit(w.begin, w.end) for w in top]
            covered = sum(1 for w in job.words for u in removed if u.begin <= w.begin < u.end)
            chosen = rng.sample(job.words, covered)
            deletions += [without_units(job.text, removed), without_units(job.text, chosen)]
            bases.append((explanation.label, job.prediction.scores[task][explanation.label]))
        deleted = scorer.predict(deletions)
        for i, (label, base) in enumerate(bases):
            top_drops.append(base - deleted[2 * i].scores[task][label])
            random_drops.append(base - deleted[2 * i + 1].scores[task][label])
    differences = np.array(top_drops) - np.array(random_drops)
    n = len(differences)
    spread = float(differences.std(ddof=1)) if n > 1 else math.nan
    return Faithfulness(
        task=task,
        split=split,
        comments=n,
        top_drop=float(np.mean(top_drops)) if n else math.nan,
        random_drop=float(np.mean(random_drops)) if n else math.nan,
        margin=float(differences.mean()) if n else math.nan,
        margin_ci95=1.96 * spread / math.sqrt(n) if n > 1 else math.nan,
        margin_positive_share=float((differences > 0).mean()) if n else math.nan,
    )


def faithfulness_markdown(results: Sequence[Faithfulness], k: int) -> str:
    lines = [
        f"| task | split | comments | drop, top-{k} units | drop, as many random words "
        "| margin (95% CI) | comments with margin > 0 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.task.value} | {r.split} | {r.comments} | {r.top_drop:.3f} | "
            f"{r.random_drop:.3f} | **{r.margin:+.3f}** (± {r.margin_ci95:.3f}) | "
            f"{100 * r.margin_positive_share:.0f}% |"
        )
    return "\n".join(lines)
