"""In-domain adaptation of the encoder for one task, without moving the others.

Fitting a head on frozen vectors gains little for a task whose signal the encoder does not
separate (docs/experiments.md: the question head on brand comments). This continues training
the LoRA adapters and the task's head on the decisions (plus anchoring rows of the task's own
training data), while the other heads' outputs on replayed texts are distilled from the network
as it was, so one encoder pass still serves every task.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from model.artifact import Manifest, TaskSpec, read_manifest, sha256_file, write_manifest
from model.scorer import calibrated, decide_rows
from model.tasks import LABELS, Task
from model.text import dedup_key
from model.transformer import MultiTaskNetwork, encode
from training.catalog import WEAK_QUESTION_SOURCE, Catalog
from training.evaluate import CROSS_VALIDATED, EVALUATIONS, polarity_only
from training.feedback import (
    FEEDBACK_SOURCE,
    FeedbackOptions,
    cross_validation_report,
    flat_cross_validation,
    held_out_mask,
    refuse_drops,
    text_buckets,
)
from training.metrics import official_metric
from training.transformer import (
    ADAPTERS_FILE,
    OptimConfig,
    calibrate_heads,
    calibration_texts,
    class_weights,
    pooled_vectors,
    predict_logits,
    task_data,
    task_plans,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptationOptions:
    steps: int = 200
    lr: float = 3e-4  # adapters
    head_lr: float = 1e-3
    batch_size: int = 16  # decisions per step; as many anchoring rows and replayed texts
    distill_weight: float = 1.0
    distill_temperature: float = 2.0
    warmup_steps: int = 20
    seed: int = 0


# The layers whose mean-pooled states the anchors' teacher reads, the last three (4-6 of
# MiniLM's six): on brand questions they separate better side by side than the last layer alone
# (docs/experiments.md).
TEACHER_LAYERS = (-3, -2, -1)
# Anchoring rows whose labels are rule votes, not people's: a teacher may relabel them.
WEAK_SOURCES = frozenset({WEAK_QUESTION_SOURCE})


def teacher_labels(
    train_vectors: np.ndarray, train_labels: np.ndarray, vectors: np.ndarray, seed: int
) -> np.ndarray:
    """Labels for ``vectors`` from a logistic regression fitted on the decisions' vectors.

    Its regularisation is chosen by cross-validation inside the decisions it is given, so an
    out-of-fold figure stays out of sample; unweighted, so its labels keep the decisions' prior.
    """
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    model = make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(
            Cs=10, cv=folds, scoring="neg_log_loss", max_iter=3000, use_legacy_attributes=False
        ),
    )
    model.fit(train_vectors, train_labels)
    labels: np.ndarray = model.predict(vectors)
    return labels


@torch.inference_mode()
def teacher_logits(
    network: MultiTaskNetwork,
    tokenizer: Any,
    texts: Sequence[str],
    tasks: Sequence[Task],
    batch_size: int = 64,
) -> dict[Task, torch.Tensor]:
    """The other heads' logits on the replayed texts before adaptation (the targets to keep)."""
    vectors = torch.as_tensor(pooled_vectors(network, tokenizer, texts, batch_size))
    return {task: network.heads[task.value](vectors).float() for task in tasks}


def adapt_encoder(
    network: MultiTaskNetwork,
    tokenizer: Any,
    decisions: Mapping[Task, tuple[Sequence[str], np.ndarray]],
    anchors: Mapping[Task, tuple[Sequence[str], np.ndarray]],
    replay: tuple[Sequence[str], dict[Task, torch.Tensor]],
    options: AdaptationOptions,
) -> list[float]:
    """Train ``network`` in place on the tasks of ``decisions``; returns the running loss every
    20 steps.

    Each step, per adapted task: ``batch_size`` decisions, as many anchoring rows
    (class-weighted cross-entropy), and as many replayed texts whose other-task logits are
    pulled toward the teacher's (KL at ``distill_temperature``, Hinton et al. 2015).
    """
    rng = np.random.default_rng(options.seed)
    torch.manual_seed(options.seed)
    tasks = list(decisions)
    replay_texts, targets = list(replay[0]), replay[1]
    others = [t for t in targets if t not in decisions]
    weights = {
        task: torch.as_tensor(
            class_weights(np.concatenate([decisions[task][1], anchors[task][1]]),
                          len(LABELS[task])),
            dtype=torch.float32,
        )
        for task in tasks
    }  # fmt: skip
    prefixes = tuple(f"heads.{task.value}." for task in tasks)
    heads = [p for n, p in network.named_parameters() if n.startswith(prefixes)]
    adapters = [
        p for n, p in network.named_parameters() if p.requires_grad and not n.startswith("heads.")
    ]
    for name, parameter in network.named_parameters():
        if name.startswith("heads."):
            parameter.requires_grad = name.startswith(prefixes)
    optimizer = torch.optim.AdamW(
        [{"params": adapters, "lr": options.lr}, {"params": heads, "lr": options.head_lr}],
        weight_decay=0.01,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / options.warmup_steps, (options.steps - s) / options.steps),
    )
    b, t = options.batch_size, options.distill_temperature
    max_length = network.config.max_length
    history, running = [], 0.0
    network.train()
    adapted = "+".join(task.value for task in tasks)
    for step in tqdm(range(options.steps), desc=f"adapt {adapted}", unit="step"):
        texts: list[str] = []
        gold: dict[Task, torch.Tensor] = {}
        for task in tasks:
            own = rng.integers(0, len(decisions[task][0]), size=b)
            anchor = rng.integers(0, len(anchors[task][0]), size=b)
            texts += [decisions[task][0][i] for i in own] + [anchors[task][0][i] for i in anchor]
            gold[task] = torch.as_tensor(
                np.concatenate([decisions[task][1][own], anchors[task][1][anchor]])
            )
        kept = rng.integers(0, len(replay_texts), size=b * len(tasks))
        pooled = network.pool(
            **encode(tokenizer, texts + [replay_texts[i] for i in kept], max_length)
        )
        loss = torch.stack(
            [
                nn.functional.cross_entropy(
                    network.heads[task.value](pooled[2 * b * k : 2 * b * (k + 1)]),
                    gold[task],
                    weight=weights[task],
                )
                for k, task in enumerate(tasks)
            ]
        ).sum()
        replayed = pooled[len(texts) :]
        for other in others:
            student = nn.functional.log_softmax(network.heads[other.value](replayed) / t, dim=1)
            teacher = nn.functional.log_softmax(targets[other][kept] / t, dim=1)
            kd = nn.functional.kl_div(student, teacher, log_target=True, reduction="batchmean")
            loss = loss + options.distill_weight * t * t * kd / len(others)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(adapters + heads, 1.0)
        optimizer.step()
        scheduler.step()
        running = 0.95 * running + 0.05 * loss.item() if step else loss.item()
        if (step + 1) % 20 == 0:
            history.append(round(running, 4))
            logger.info("adapt %s step %d: loss %.4f", adapted, step + 1, running)
    for name, parameter in network.named_parameters():
        if name.startswith("heads."):
            parameter.requires_grad = True
    network.eval()
    return history


def _labels(
    network: MultiTaskNetwork,
    tokenizer: Any,
    spec: TaskSpec,
    task: Task,
    texts: Sequence[str],
    polarity: bool = False,
) -> list[str]:
    """Labels as the served model decides them (``polarity``: negative vs positive, as SST-2)."""
    logits = predict_logits(network, tokenizer, list(texts), task, 64)
    probabilities = calibrated(logits, spec)
    if polarity:
        return polarity_only(probabilities)
    return list(decide_rows(task, probabilities, spec.threshold))


def retrain_encoder(
    base_dir: Path,
    feedback: pd.DataFrame,
    data_dir: Path,
    output_dir: Path,
    options: FeedbackOptions,
    feedback_hash: str,
    encoder_dir: Path | None = None,
    folds: int = 0,
    version: str | None = None,
    predictions_file: Path | None = None,
) -> Manifest:
    """A new version of a transformer model whose encoder learned the decisions' tasks.

    As ``retrain_heads``, but the adapters move too (``adapt_encoder``, every decided task at
    once), so every task's figures can change: the other heads are recalibrated on their
    validation data, every evaluation set is compared before and after, and one losing more
    than ``max_drop`` points refuses the model. With ``folds`` >= 2, each fold of the decisions
    (by text, so a comment labelled for two tasks stays in one fold) is first decided by an
    encoder adapted without it; ``predictions_file`` then receives, as JSON lines, each
    decision text's fold, out-of-fold probabilities of every task and embedding (what a measure
    built on the served scores, such as reply suggestions, needs to stay out-of-sample), and
    each fold model's adapters are saved beside it (``fold_adapters_file``), so such a measure
    can embed its own texts (reply templates) with the model that decided each fold.
    """
    from model.scorer import TransformerScorer
    from training.catalog import load_catalog
    from training.onnx_export import export_onnx

    manifest = read_manifest(base_dir)
    if manifest.kind != "transformer-lora":
        raise ValueError(f"{base_dir} holds a {manifest.kind} model: only a transformer adapts")
    tasks = sorted({Task(t) for t in feedback["task"]})
    if missing := [t.value for t in tasks if t not in manifest.tasks]:
        raise ValueError(f"the model has no head for {', '.join(missing)}")
    if folds == 1 or folds < 0:
        raise ValueError("cross-validation needs at least 2 folds")
    if predictions_file is not None and not folds:
        raise ValueError("out-of-fold predictions need cross-validation (folds >= 2)")
    scorer = TransformerScorer(base_dir, manifest, encoder_dir)
    network, tokenizer = scorer.network, scorer.tokenizer
    base_state = network.trainable_state()
    catalog = load_catalog(data_dir)
    plans = task_plans(manifest.config)
    rng = np.random.default_rng(options.seed)

    decisions = feedback.reset_index(drop=True)
    labels = np.array(
        [LABELS[Task(t)].index(label) for t, label in zip(decisions["task"], decisions["label"], strict=True)]
    )  # fmt: skip
    held = np.zeros(len(decisions), dtype=bool) if folds else held_out_mask(
        decisions["text"], options.held_out
    )  # fmt: skip
    of_task = {task: (decisions["task"] == task.value).to_numpy() for task in tasks}
    keys = set(decisions["text"].map(dedup_key))
    anchor_rows, weak, replay = {}, {}, []
    for task in tasks:
        plan = next(p for p in plans if p.task is task)
        regular = catalog.select(task, "train", plan.train_sources)
        regular = regular[~regular["text"].map(dedup_key).isin(keys)]
        regular = regular.iloc[rng.permutation(len(regular))]
        anchors = regular.iloc[: options.replay_rows]
        anchor_rows[task] = (
            list(anchors["text"]),
            anchors["label"].map(LABELS[task].index).to_numpy(),
        )
        weak[task] = anchors["source"].isin(WEAK_SOURCES).to_numpy()
        # The texts the other heads must keep reading alike: ones the anchors leave, ...
        replay += list(regular["text"].iloc[options.replay_rows : options.replay_rows + 2000])
    # ... the decisions' own (a head that does not learn from them must read them alike), and a
    # sample of each other task's training data.
    replay += list(dict.fromkeys(decisions["text"]))
    others = [t for t in manifest.tasks if t not in tasks]
    for other in others:
        rows = catalog.select(
            other, "train", next(p for p in plans if p.task is other).train_sources
        )
        replay += list(rows["text"].iloc[rng.permutation(len(rows))[:600]])
    replay_rows = (replay, teacher_logits(network, tokenizer, replay, others))
    adaptation = AdaptationOptions(
        steps=options.encoder_steps, lr=options.encoder_lr, seed=options.seed
    )
    relabelled = [task for task in tasks if options.teacher_anchors and weak[task].any()]
    if relabelled:  # the teacher reads the network as it was, before any adaptation
        taught = list(dict.fromkeys(decisions["text"])) + [
            text for task in relabelled for text in anchor_rows[task][0]
        ]
        vectors = pooled_vectors(network, tokenizer, taught, 64, TEACHER_LAYERS)
        row_of = {text: i for i, text in enumerate(taught)}

    def anchors_for(train: np.ndarray) -> dict[Task, tuple[Sequence[str], np.ndarray]]:
        """The anchoring rows, their rule votes replaced by a teacher fitted on ``train``."""
        result: dict[Task, tuple[Sequence[str], np.ndarray]] = dict(anchor_rows)
        for task in relabelled:
            texts, votes = anchor_rows[task]
            fitted = train & of_task[task]
            taught_labels = teacher_labels(
                vectors[[row_of[t] for t in decisions["text"][fitted]]],
                labels[fitted],
                vectors[[row_of[t] for t in texts]],
                options.seed,
            )
            result[task] = (texts, np.where(weak[task], taught_labels, votes))
            logger.info(
                "teacher: %d of %d %s anchors relabelled",
                int((result[task][1] != votes).sum()), len(votes), task.value,
            )  # fmt: skip
        return result

    def adapt(train: np.ndarray) -> None:
        network.load_trainable_state(base_state)
        mine = {
            task: (list(decisions["text"][train & of_task[task]]), labels[train & of_task[task]])
            for task in tasks
        }
        adapt_encoder(network, tokenizer, mine, anchors_for(train), replay_rows, adaptation)

    def predict(rows: np.ndarray, fold: int = -1) -> tuple[dict[int, str], list[dict[str, Any]]]:
        """The current network's label for each of these decision rows (under its own task),
        and every head's probabilities and the unit-length embedding of each of their texts."""
        texts = list(dict.fromkeys(decisions["text"][rows]))
        position = {text: i for i, text in enumerate(texts)}
        vectors = pooled_vectors(network, tokenizer, texts, 64)
        with torch.inference_mode():
            pooled = torch.as_tensor(vectors)
            probabilities = {
                t: calibrated(network.heads[t.value](pooled).float().numpy(), spec)
                for t, spec in manifest.tasks.items()
            }
        decided: dict[int, str] = {}
        for task in tasks:
            index = np.flatnonzero(rows & of_task[task])
            mine = probabilities[task][[position[t] for t in decisions["text"].iloc[index]]]
            chosen = decide_rows(task, mine, manifest.tasks[task].threshold)
            decided.update(zip(index.tolist(), chosen.tolist(), strict=True))
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
        predictions = [
            {
                "text": text,
                "fold": fold,
                "scores": {
                    t.value: dict(zip(LABELS[t], p[i].round(6).tolist(), strict=True))
                    for t, p in probabilities.items()
                },
                "embedding": unit[i].round(6).tolist(),
            }
            for i, text in enumerate(texts)
        ]
        return decided, predictions

    before_labels = pd.Series(predict(np.ones(len(decisions), dtype=bool))[0], dtype=object)
    sets = _evaluation_sets(catalog, tasks, decisions, held)
    before = [
        _labels(network, tokenizer, manifest.tasks[t], t, list(rows["text"]), polar)
        for t, _, rows, _, polar in sets
    ]
    report: dict[str, Any] = {"feedback_rows": len(decisions), "held_out_rows": int(held.sum())}
    cross_validated: dict[str, float] = {}
    if folds:
        fold_of = text_buckets(decisions["text"]) % folds
        out_of_fold: dict[int, str] = {}
        predictions: list[dict[str, Any]] = []
        for fold in range(folds):
            adapt(fold_of != fold)
            decided, predicted = predict(fold_of == fold, fold)
            out_of_fold.update(decided)
            predictions += predicted
            if predictions_file is not None:
                predictions_file.parent.mkdir(parents=True, exist_ok=True)
                save_adapters(network, fold_adapters_file(predictions_file, fold))
        if predictions_file is not None:
            with predictions_file.open("w", encoding="utf-8") as out:
                out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in predictions)
        report["cross_validation"] = {
            task.value: cross_validation_report(
                catalog,
                task,
                decisions[of_task[task]],
                before_labels,
                pd.Series(out_of_fold, dtype=object),
                folds,
            )
            for task in tasks
        }
        cross_validated = flat_cross_validation(report["cross_validation"])
    adapt(~held)

    data = task_data(catalog, plans)
    specs, calibration = calibrate_heads(network, tokenizer, data, OptimConfig())
    comparison: dict[str, list[dict[str, Any]]] = {t.value: [] for t in manifest.tasks}
    for (t, name, rows, left_out, polar), old in zip(sets, before, strict=True):
        new = _labels(network, tokenizer, specs[t], t, list(rows["text"]), polar)
        gold = list(rows["label"])
        comparison[t.value].append({
            "set": name, "rows": len(rows), "left_out_in_feedback": left_out,
            "before": round(100 * official_metric(t, gold, old), 2),
            "after": round(100 * official_metric(t, gold, new), 2),
        })  # fmt: skip
    for key, entries in comparison.items():
        report[key] = {"adapted": Task(key) in tasks, "comparison": entries}
    refuse_drops(report, options.max_drop)

    output_dir.mkdir(parents=True, exist_ok=True)
    save_adapters(network, output_dir / ADAPTERS_FILE)
    updated = manifest.model_copy(
        update={
            "version": version or f"{manifest.version}+adapted.{feedback_hash[:8]}",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "tasks": specs,
            "files": {ADAPTERS_FILE: sha256_file(output_dir / ADAPTERS_FILE)},
            "onnx": None,
            "metrics": {
                **{k: v for k, v in manifest.metrics.items() if k != CROSS_VALIDATED},
                "val": {t: values["val_metric"] for t, values in calibration.items()},
                **{f"calibration.{t}": values for t, values in calibration.items()},
                "feedback": {
                    f"{key}/{row['set']}/{when}": float(row[when])
                    for key, entries in comparison.items()
                    for row in entries
                    for when in ("before", "after")
                },
                # Every head reads the new encoder: no earlier out-of-fold figure still holds.
                CROSS_VALIDATED: cross_validated,
            },
            "training_data": {**manifest.training_data, FEEDBACK_SOURCE: feedback_hash},
            "config": {
                **manifest.config,
                "feedback": {
                    "base": f"{manifest.name} {manifest.version}",
                    "adapted": [task.value for task in tasks],
                    **asdict(options),
                },
            },
        }
    )
    write_manifest(output_dir, updated)
    (output_dir / "feedback-report.json").write_text(json.dumps(report, indent=2) + "\n")
    if manifest.onnx is not None:
        export_onnx(output_dir, calibration_texts(catalog, plans), encoder_dir)
    return read_manifest(output_dir)


def fold_adapters_file(predictions_file: Path, fold: int) -> Path:
    """Where the adapters of the model that decided ``fold`` of an out-of-fold file are kept."""
    return predictions_file.with_name(f"{predictions_file.stem}.fold-{fold}.safetensors")


def save_adapters(network: MultiTaskNetwork, path: Path) -> None:
    """The trainable weights in fp16, as an artifact stores them."""
    save_file({name: t.half() for name, t in network.trainable_state().items()}, path)


def _evaluation_sets(
    catalog: Catalog, tasks: Sequence[Task], decisions: pd.DataFrame, held: np.ndarray
) -> list[tuple[Task, str, pd.DataFrame, int, bool]]:
    """Every evaluation set as (task, name, rows, rows left out, polarity only): the adapted
    tasks' sets less the texts that are decisions, and the held-out decisions of each task."""
    keys = set(decisions["text"].map(dedup_key))
    sets = []
    for eval_task, source, split in EVALUATIONS:
        rows = catalog.select(eval_task, split, [source])
        seen = rows["text"].map(dedup_key).isin(keys) if eval_task in tasks else None
        if seen is not None:
            rows = rows[~seen]
        if not rows.empty:
            left_out = int(seen.sum()) if seen is not None else 0
            sets.append((eval_task, f"{source}/{split}", rows, left_out, source == "sst2"))
    for task in tasks:
        mine = decisions[held & (decisions["task"] == task.value).to_numpy()]
        if not mine.empty:
            sets.append((task, "feedback/held-out", mine, 0, False))
    return sets
