"""A TF-IDF member for a transformer model's adapted tasks, measured out of fold.

The classical model sees exact words and character n-grams, so it errs differently from the
network (docs/experiments.md). The member learns from the decisions the encoder adapted to, plus
the classical model's training data for each of their tasks. Each fold of the decisions is
decided by a member fitted without it, averaged with the network's out-of-fold probabilities
(the file `commentdesk train --feedback --folds K --out-of-fold FILE` writes), so the figures stay
out of sample. A task's weight comes from a grid, chosen on those out-of-fold predictions; the
figure reported for it is nested: each fold decided with the weight chosen on the other folds.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model.artifact import LexicalSpec, Manifest, read_manifest, sha256_file, write_manifest
from model.scorer import decide_rows
from model.tasks import LABELS, Task
from model.text import dedup_key
from training.baseline import fit_linear_model, linear_plans
from training.catalog import load_catalog
from training.evaluate import CROSS_VALIDATED
from training.feedback import cross_validation_report, flat_cross_validation
from training.metrics import official_metric

logger = logging.getLogger(__name__)

PREFIX = "lexical-"
# The network's share of each task's probabilities; 1.0 leaves the task to the network.
WEIGHTS = tuple(round(w, 1) for w in np.linspace(0.0, 1.0, 11))


def read_out_of_fold(path: Path, texts: Sequence[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Each text's fold and out-of-fold row from a `train --out-of-fold` file."""
    try:
        rows = {row["text"]: row for row in map(json.loads, path.open(encoding="utf-8"))}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not an out-of-fold file: {exc}") from exc
    if missing := [t for t in texts if t not in rows]:
        raise ValueError(f"{path} lacks {len(missing)} of the decisions, e.g. {missing[0]!r}")
    chosen = [rows[t] for t in texts]
    if any(not isinstance(row.get("fold"), int) or row["fold"] < 0 for row in chosen):
        raise ValueError(f"{path} has no fold per row: rebuild it with this version")
    return np.array([row["fold"] for row in chosen]), chosen


def choose_weight(
    task: Task, gold: np.ndarray, network: np.ndarray, member: np.ndarray, threshold: float | None
) -> float:
    """The grid weight with the best official metric (ties go to the network's larger share)."""
    scores = [
        official_metric(
            task, list(gold), list(decide_rows(task, w * network + (1 - w) * member, threshold))
        )
        for w in WEIGHTS
    ]
    return float(WEIGHTS[max(range(len(WEIGHTS)), key=lambda i: (scores[i], i))])


def add_lexical_member(
    model_dir: Path,
    decisions: pd.DataFrame,
    out_of_fold: Path,
    data_dir: Path,
    output_dir: Path,
    config: dict[str, Any],
    version: str,
    served_out_of_fold: Path | None = None,
) -> tuple[Manifest, dict[str, Any]]:
    """A new version of ``model_dir`` with a TF-IDF member for the decisions' tasks where the
    out-of-fold predictions favour one, and a report of the choice per task. The new model's
    out-of-fold scores (nested blends) go to ``served_out_of_fold`` when given.

    ``config`` is the classical model's (configs/baseline.toml): features, and per task the
    training sources and regularisation the member uses.
    """
    manifest = read_manifest(model_dir)
    if manifest.kind != "transformer-lora":
        raise ValueError(
            f"{model_dir} holds a {manifest.kind} model: only a transformer has a member"
        )
    decisions = decisions.reset_index(drop=True)
    texts = list(dict.fromkeys(decisions["text"]))
    folds_of_text, predicted = read_out_of_fold(out_of_fold, texts)
    fold_of = dict(zip(texts, folds_of_text.tolist(), strict=True))
    position = {text: i for i, text in enumerate(texts)}
    folds = int(folds_of_text.max()) + 1
    if folds < 2:
        raise ValueError(f"{out_of_fold} holds one fold: a member is measured by cross-validation")
    tasks = sorted({Task(t) for t in decisions["task"]})
    plans = [p for p in linear_plans(config) if p.task in tasks]
    if missing := sorted({t.value for t in tasks} - {p.task.value for p in plans}):
        raise ValueError(f"the classical config has no plan for {', '.join(missing)}")
    catalog = load_catalog(data_dir)
    keys = set(decisions["text"].map(dedup_key))
    regular = {}
    for plan in plans:
        rows = catalog.select(plan.task, "train", plan.train_sources)
        regular[plan.task] = rows[~rows["text"].map(dedup_key).isin(keys)][["text", "label"]]
    mine = {task: decisions[decisions["task"] == task.value] for task in tasks}
    network = {
        task: np.array(
            [
                [row["scores"][task.value][label] for label in LABELS[task]]
                for row in (predicted[position[t]] for t in rows["text"])
            ]
        )
        for task, rows in mine.items()
    }
    member = {task: np.zeros_like(p) for task, p in network.items()}
    fold = {task: rows["text"].map(fold_of).to_numpy() for task, rows in mine.items()}
    seed = int(config.get("seed", 0))
    for k in range(folds):
        logger.info("lexical member for fold %d of %d", k + 1, folds)
        train = {
            t: pd.concat([mine[t][fold[t] != k][["text", "label"]], regular[t]]) for t in tasks
        }
        fitted = fit_linear_model(plans, train, config["features"], seed)
        for task in tasks:
            held = fold[task] == k
            if held.any():
                member[task][held] = fitted.predict_proba(list(mine[task]["text"][held]))[task]

    weights: dict[Task, float] = {}
    report: dict[str, Any] = {}
    cross_validated = dict(manifest.metrics.get(CROSS_VALIDATED, {}))
    # What the served model would have said out of fold: the network's scores, nested blends
    # where a member is added.
    served = [
        {"text": r["text"], "fold": r["fold"], "scores": dict(r["scores"])} for r in predicted
    ]
    for task in tasks:
        gold = mine[task]["label"].to_numpy()
        threshold = manifest.tasks[task].threshold
        chosen = choose_weight(task, gold, network[task], member[task], threshold)
        nested = np.zeros_like(network[task])
        per_fold = []
        for k in range(folds):
            held = fold[task] == k
            w = choose_weight(
                task, gold[~held], network[task][~held], member[task][~held], threshold
            )
            per_fold.append(w)
            nested[held] = w * network[task][held] + (1 - w) * member[task][held]
        alone = decide_rows(task, network[task], threshold)
        index = mine[task].index
        folded = cross_validation_report(
            catalog,
            task,
            mine[task],
            pd.Series(alone, index=index),
            pd.Series(decide_rows(task, nested, threshold), index=index),
            folds,
        )
        report[task.value] = {
            "weight": chosen,
            "weights_per_fold": per_fold,
            "member_alone": round(
                100
                * official_metric(
                    task, list(gold), list(decide_rows(task, member[task], threshold))
                ),
                2,
            ),
            "cross_validation": folded,
        }
        if chosen < 1.0:
            weights[task] = chosen
            for text, probabilities in zip(mine[task]["text"], nested, strict=True):
                served[position[text]]["scores"][task.value] = dict(
                    zip(LABELS[task], probabilities.round(6).tolist(), strict=True)
                )
            # "before" is the network alone, "after" the nested figure of the blend.
            cross_validated = {
                k: v for k, v in cross_validated.items() if not k.startswith(f"{task.value}/")
            }
            cross_validated |= flat_cross_validation({task.value: folded})
    if not weights:
        raise ValueError(
            "the out-of-fold predictions favour the network alone for every task: no member"
        )

    if output_dir.resolve() != model_dir.resolve():
        shutil.copytree(model_dir, output_dir, dirs_exist_ok=True)
    final = fit_linear_model(
        [p for p in plans if p.task in weights],
        {t: pd.concat([mine[t][["text", "label"]], regular[t]]) for t in weights},
        config["features"],
        seed,
    )
    files = final.save(output_dir, PREFIX)
    updated = manifest.model_copy(
        update={
            "version": version,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": {
                **{k: v for k, v in manifest.files.items() if not k.startswith(PREFIX)},
                **{name: sha256_file(output_dir / name) for name in files},
            },
            "lexical": LexicalSpec(prefix=PREFIX, weights=weights),
            "metrics": {**manifest.metrics, CROSS_VALIDATED: cross_validated},
            "config": {
                **manifest.config,
                "lexical": {
                    "base": f"{manifest.name} {manifest.version}",
                    "features": config["features"],
                    "tasks": {
                        p.task.value: {"train_sources": p.train_sources, "C": p.c} for p in plans
                    },
                    "report": report,
                },
            },
        }
    )
    write_manifest(output_dir, updated)
    if served_out_of_fold is not None:
        with served_out_of_fold.open("w", encoding="utf-8") as out:
            out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in served)
    return read_manifest(output_dir), report
