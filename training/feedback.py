"""Moderator decisions as labelled training rows, and a model's heads fitted again on them."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from model.artifact import Manifest, TaskSpec, read_manifest, sha256_file, write_manifest
from model.scorer import calibrated, decide_rows, softmax
from model.tasks import LABELS, Task, is_binary
from model.text import dedup_key
from training.calibration import fit_calibration
from training.catalog import Catalog
from training.evaluate import CROSS_VALIDATED, EVALUATIONS, polarity_only
from training.metrics import best_threshold, official_metric
from training.transformer import (
    ADAPTERS_FILE,
    calibration_texts,
    class_weights,
    pooled_vectors,
    task_plans,
)

logger = logging.getLogger(__name__)

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


class FeedbackRegression(Exception):
    """Retraining on feedback lowered a test-split metric by more than the allowed drop."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class FeedbackOptions:
    """How decision labels join the regular data when the heads are fitted again."""

    held_out: float = 0.2  # share of the feedback (by text) kept back to measure the change
    replay_rows: int = 4000  # regular training rows per task, sampled, that anchor the head
    feedback_weight: float = 4.0  # each decision counts as this many regular rows
    prior: float = 0.1  # L2 pull of the new head toward the old one (docs/experiments.md)
    max_drop: float = 1.0  # points a test-split metric may lose before the model is refused
    max_val_drop: float = 0.5  # validation points a task may lose before its weight is halved
    weight_halvings: int = 3
    seed: int = 0
    batch_size: int = 64
    # > 0: adapt the encoder itself to the decisions for this many steps, the other heads
    # distilled (training/adaptation.py; every decided task at once); 0: fit the heads only.
    encoder_steps: int = 0
    encoder_lr: float = 3e-4
    # With encoder_steps: anchoring rows whose labels are rule votes (the weak question labels)
    # take the label of a teacher fitted on the decisions instead (training/adaptation.py).
    teacher_anchors: bool = False


def text_buckets(texts: pd.Series) -> np.ndarray:
    """A stable, seed-free number per text: duplicates of a comment always get the same one."""
    buckets = texts.map(lambda t: int(hashlib.sha256(dedup_key(t).encode()).hexdigest()[:8], 16))
    result: np.ndarray = buckets.to_numpy(dtype=np.int64)
    return result


def held_out_mask(texts: pd.Series, share: float) -> np.ndarray:
    """A stable split by text: duplicates of a comment always fall on the same side."""
    result: np.ndarray = text_buckets(texts) % 1000 < share * 1000
    return result


def fit_head(
    head: nn.Linear,
    vectors: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    class_weights: np.ndarray | None,
    prior: float,
) -> nn.Linear:
    """Weighted cross-entropy from the old head as start and as prior (full batch, L-BFGS)."""
    fitted = nn.Linear(head.in_features, head.out_features)
    fitted.load_state_dict(head.state_dict())
    old = [p.detach().clone() for p in head.parameters()]
    x = torch.as_tensor(vectors)
    y = torch.as_tensor(labels, dtype=torch.long)
    w = torch.as_tensor(weights, dtype=torch.float32)
    if class_weights is not None:
        w = w * torch.as_tensor(class_weights, dtype=torch.float32)[y]
    optimizer = torch.optim.LBFGS(
        list(fitted.parameters()), max_iter=200, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        losses = nn.functional.cross_entropy(fitted(x), y, reduction="none")
        pull = sum(((p - q) ** 2).sum() for p, q in zip(fitted.parameters(), old, strict=True))
        loss: torch.Tensor = (losses * w).sum() / w.sum() + prior * pull
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    return fitted


@dataclass
class _Head:
    """One task's head with the temperature and threshold its probabilities and labels use."""

    linear: nn.Linear
    spec: TaskSpec

    def labels(self, task: Task, vectors: np.ndarray, polarity: bool = False) -> list[str]:
        """Labels decided as the served model decides them (``polarity``: as on SST-2)."""
        with torch.no_grad():
            logits = self.linear(torch.as_tensor(vectors)).double().numpy()
        probabilities = calibrated(logits, self.spec)
        if polarity:
            return polarity_only(probabilities)
        return list(decide_rows(task, probabilities, self.spec.threshold))

    def metric(self, task: Task, vectors: np.ndarray, gold: list[str], polarity: bool) -> float:
        """The task's official metric in percent, computed as ``commentdesk evaluate`` does."""
        return round(100 * official_metric(task, gold, self.labels(task, vectors, polarity)), 2)


class _Retraining:
    """The state one feedback run shares between tasks: the network, the data, the split."""

    def __init__(
        self,
        base_dir: Path,
        feedback: pd.DataFrame,
        data_dir: Path,
        options: FeedbackOptions,
        encoder_dir: Path | None,
    ):
        from model.scorer import TransformerScorer
        from training.catalog import load_catalog

        self.manifest = read_manifest(base_dir)
        if self.manifest.kind != "transformer-lora":
            raise ValueError(
                f"{base_dir} holds a {self.manifest.kind} model: retrain it with --config and "
                "--extra-data"
            )
        self.scorer = TransformerScorer(base_dir, self.manifest, encoder_dir)
        self.plans = {plan.task: plan for plan in task_plans(self.manifest.config)}
        self.catalog = load_catalog(data_dir)
        self.feedback = feedback.reset_index(drop=True)  # folds and labels go by position
        self.held = held_out_mask(feedback["text"], options.held_out)
        self.feedback_keys = set(feedback["text"].map(dedup_key))
        self.options = options
        self.rng = np.random.default_rng(options.seed)
        self._vectors: dict[str, np.ndarray] = {}

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Pooled vectors, each text encoded once per run (evaluation sets and held-out
        decisions are shared by several tasks)."""
        new = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if new:
            computed = pooled_vectors(
                self.scorer.network, self.scorer.tokenizer, new, self.options.batch_size
            )
            self._vectors.update(zip(new, computed, strict=True))
        return np.stack([self._vectors[t] for t in texts])

    def tasks(self) -> list[Task]:
        """The tasks the fitted decisions name; each must have a head in the model."""
        tasks = sorted({Task(t) for t in self.feedback.loc[~self.held, "task"]})
        if missing := [task.value for task in tasks if task not in self.plans]:
            raise ValueError(f"the model has no head for {missing}")
        return tasks

    def old_head(self, task: Task) -> _Head:
        sequence = self.scorer.network.heads[task.value]
        assert isinstance(sequence, nn.Sequential) and isinstance(sequence[1], nn.Linear)
        return _Head(sequence[1], self.manifest.tasks[task])

    def fit(self, task: Task) -> tuple[_Head, dict[str, Any]]:
        """The task's head fitted on regular rows plus decisions, calibrated as in training.

        With validation data, the decisions' weight is halved until the validation metric
        stays within ``max_val_drop`` points of the old head's (decisions from one brand can
        pull a head away from the task's general data); with none of the weights, the old head
        stays. A task without validation data keeps its temperature and threshold.
        """
        plan, names, old = self.plans[task], list(LABELS[task]), self.old_head(task)
        regular = self.catalog.select(task, "train", plan.train_sources)
        # A decision on a training text must not come back as a replayed row (its held-out fold
        # would be decided by heads that saw it).
        regular = regular[~regular["text"].map(dedup_key).isin(self.feedback_keys)]
        regular = regular.iloc[self.rng.permutation(len(regular))[: self.options.replay_rows]]
        mine = self.feedback[(self.feedback["task"] == task.value) & ~self.held]
        labels = np.array([names.index(x) for x in [*regular["label"], *mine["label"]]])
        vectors = self.vectors([*regular["text"], *mine["text"]])
        per_class = class_weights(labels, len(names)) if plan.class_weights else None
        details: dict[str, Any] = {"regular_rows": len(regular), "feedback_rows": len(mine)}
        validation = None
        if plan.val_source:
            val = self.catalog.select(task, "val", [plan.val_source])
            validation = (val, self.vectors(list(val["text"])))
            details["val_before"] = old.metric(task, validation[1], list(val["label"]), False)
        weight = self.options.feedback_weight
        for _ in range(self.options.weight_halvings + 1):
            linear = fit_head(
                old.linear,
                vectors,
                labels,
                np.concatenate([np.ones(len(regular)), np.full(len(mine), weight)]),
                per_class,
                self.options.prior,
            )
            if validation is None:
                return _Head(linear, old.spec), details | {"feedback_weight": weight}
            val, val_vectors = validation
            head = _Head(linear, self._calibrated(task, linear, val, val_vectors, old.spec))
            score = head.metric(task, val_vectors, list(val["label"]), False)
            if score >= details["val_before"] - self.options.max_val_drop:
                return head, details | {"feedback_weight": weight, "val_after": score}
            logger.info("%s: weight %s loses on validation (%s); halving it", task, weight, score)
            weight /= 2
        return old, details | {"feedback_weight": 0.0, "kept": "the old head"}

    def _calibrated(
        self, task: Task, linear: nn.Linear, val: pd.DataFrame, vectors: np.ndarray, spec: TaskSpec
    ) -> TaskSpec:
        names = list(LABELS[task])
        gold = val["label"].map(names.index).to_numpy()
        with torch.no_grad():
            logits = linear(torch.as_tensor(vectors)).numpy()
        temperature, bias = fit_calibration(logits, gold)
        threshold = spec.threshold
        if is_binary(task) and self.plans[task].threshold == "val":
            probabilities = softmax(logits, temperature, bias)
            threshold = best_threshold(gold == 1, probabilities[:, 1], task)
        return TaskSpec(labels=names, threshold=threshold, temperature=temperature, bias=bias)

    def compare(self, task: Task, before: _Head, after: _Head) -> list[dict[str, Any]]:
        """Both heads on the task's evaluation sets (less any text that is also feedback) and
        on the held-out decisions."""
        sets = []
        for eval_task, source, split in EVALUATIONS:
            if eval_task is task:
                rows = self.catalog.select(task, split, [source])
                in_feedback = rows["text"].map(dedup_key).isin(self.feedback_keys)
                sets.append((f"{source}/{split}", rows[~in_feedback], int(in_feedback.sum())))
        held = self.feedback[(self.feedback["task"] == task.value) & self.held]
        sets.append(("feedback/held-out", held, 0))
        comparison = []
        for name, rows, left_out in sets:
            if rows.empty:
                continue
            x, gold, polarity = (
                self.vectors(list(rows["text"])),
                list(rows["label"]),
                "sst2" in name,
            )
            comparison.append(
                {
                    "set": name,
                    "rows": len(rows),
                    "left_out_in_feedback": left_out,
                    "before": before.metric(task, x, gold, polarity),
                    "after": after.metric(task, x, gold, polarity),
                }
            )
        return comparison


def _cross_validate(run: _Retraining, tasks: list[Task], folds: int) -> dict[str, Any]:
    """What fitting the heads on all the decisions does to comments they never saw.

    The decisions are split by text into ``folds`` parts; each part is held out in turn and
    decided by heads fitted (as the final heads are) on the others. The out-of-fold labels give
    the figure to report for the decisions, and for any evaluation set they cover entirely (e.g.
    brand_comments dev given as decisions), where an in-sample figure would flatter.
    """
    feedback = run.feedback
    fold_of = text_buckets(feedback["text"]) % folds
    for task in tasks:
        if any(
            key.startswith(f"{task.value}/")
            for key in run.manifest.metrics.get(CROSS_VALIDATED, {})
        ):
            logger.warning(
                "the %s head of the base model was already fitted on decisions: if these are the "
                "same, each fold leaks through the pull toward that head", task.value
            )  # fmt: skip
    before: dict[Task, pd.Series] = {}
    after: dict[Task, pd.Series] = {}
    for task in tasks:
        mine = feedback[feedback["task"] == task.value]
        before[task] = pd.Series(
            run.old_head(task).labels(task, run.vectors(list(mine["text"]))), index=mine.index
        )
        after[task] = pd.Series("", index=mine.index)
    for fold in range(folds):
        run.held = fold_of == fold
        for task in tasks:
            held = feedback[(feedback["task"] == task.value) & run.held]
            if not held.empty:
                head, _ = run.fit(task)
                after[task][held.index] = head.labels(task, run.vectors(list(held["text"])))
    # The final heads see every decision and the same replayed rows as without cross-validation.
    run.held = np.zeros(len(feedback), dtype=bool)
    run.rng = np.random.default_rng(run.options.seed)
    return {
        task.value: cross_validation_report(
            run.catalog, task, feedback[feedback["task"] == task.value], before[task], after[task],
            folds,
        )
        for task in tasks
    }  # fmt: skip


def cross_validation_report(
    catalog: Catalog,
    task: Task,
    decisions: pd.DataFrame,
    before: pd.Series,
    after: pd.Series,
    folds: int,
) -> dict[str, Any]:
    """Out-of-fold figures for the decisions, and for every evaluation set they cover entirely
    (e.g. brand_comments dev given as decisions), where an in-sample figure would flatter."""
    sets = [("feedback", decisions)]
    for eval_task, source, split in EVALUATIONS:
        rows = catalog.select(task, split, [source]) if eval_task is task else None
        if rows is None or rows.empty:
            continue
        eval_keys, my_keys = rows["text"].map(dedup_key), decisions["text"].map(dedup_key)
        covered = eval_keys.isin(my_keys)
        if covered.all():
            sets.append((f"{source}/{split}", decisions[my_keys.isin(eval_keys)]))
        elif covered.any():
            logger.warning(
                "the decisions cover %d of the %d rows of %s/%s: its figures will mix fitted "
                "and unseen rows", covered.sum(), len(rows), source, split
            )  # fmt: skip
    return {name: _out_of_fold(task, rows, before, after, folds) for name, rows in sets}


def flat_cross_validation(report: dict[str, Any]) -> dict[str, float]:
    """``task/set/{before,after,rows,folds}`` and ``task/set/confusion/gold/predicted`` numbers,
    the form a manifest's metrics hold."""
    flat = {}
    for task, sets in report.items():
        for name, entry in sets.items():
            for key in ("rows", "folds", "before", "after"):
                flat[f"{task}/{name}/{key}"] = float(entry[key])
            for gold, row in entry["confusion"].items():
                for predicted, count in row.items():
                    flat[f"{task}/{name}/confusion/{gold}/{predicted}"] = float(count)
    return flat


def _still_valid(metrics: dict[str, dict[str, float]], refitted: list[Task]) -> dict[str, float]:
    """The base model's out-of-fold figures of the heads this run leaves as they were."""
    names = {task.value for task in refitted}
    return {
        key: value
        for key, value in metrics.get(CROSS_VALIDATED, {}).items()
        if key.split("/")[0] not in names
    }


def _out_of_fold(
    task: Task, rows: pd.DataFrame, before: pd.Series, after: pd.Series, folds: int
) -> dict[str, Any]:
    gold, predicted = list(rows["label"]), list(after[rows.index])
    counts = Counter(zip(gold, predicted, strict=True))
    confusion = {g: {p: counts[(g, p)] for p in LABELS[task]} for g in LABELS[task]}
    return {
        "rows": len(rows),
        "folds": folds,
        "before": round(100 * official_metric(task, gold, list(before[rows.index])), 2),
        "after": round(100 * official_metric(task, gold, predicted), 2),
        "confusion": confusion,
    }


def refuse_drops(report: dict[str, Any], max_drop: float) -> None:
    """Raise ``FeedbackRegression`` when any evaluation set in the report's per-task
    comparisons (the held-out decisions aside) lost more than ``max_drop`` points."""
    drops = [
        f"{task}: {row['set']} {row['before']} -> {row['after']}"
        for task, entry in report.items()
        if isinstance(entry, dict) and "comparison" in entry
        for row in entry["comparison"]
        if row["set"] != "feedback/held-out" and row["before"] - row["after"] > max_drop
    ]
    if drops:
        raise FeedbackRegression(
            f"a test split lost more than {max_drop} points: {'; '.join(drops)}", report
        )


def retrain_heads(
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
    """A new version of a transformer model whose heads learned from moderator decisions.

    The encoder and adapters stay as they are, so only the heads of the tasks the decisions
    name are fitted again, on a sample of their regular training data plus the decisions
    (weighted, pulled toward the old head), then calibrated as in training. Before and after
    are compared on the evaluation sets of those tasks and on the held-out decisions; a test
    split losing more than ``max_drop`` points refuses the model (nothing is written).
    With ``folds`` >= 2 the decisions are first cross-validated, then all of them are fitted
    (no held-out share); the out-of-fold figures go into the report and the manifest's metrics,
    where ``commentdesk evaluate`` reports them for the evaluation sets the decisions cover.
    With ``options.encoder_steps`` the encoder adapts too (``training.adaptation``, which also
    writes ``predictions_file``).
    """
    from safetensors.torch import load_file, save_file

    from training.onnx_export import export_onnx

    if options.encoder_steps > 0:
        from training.adaptation import retrain_encoder

        return retrain_encoder(
            base_dir, feedback, data_dir, output_dir, options, feedback_hash, encoder_dir, folds,
            version, predictions_file,
        )  # fmt: skip
    if predictions_file is not None:
        raise ValueError("out-of-fold predictions are written when the encoder adapts")
    if folds == 1 or folds < 0:
        raise ValueError("cross-validation needs at least 2 folds")
    if folds:
        options = replace(options, held_out=0.0)
    run = _Retraining(base_dir, feedback, data_dir, options, encoder_dir)
    tasks = run.tasks()
    cross_validation = _cross_validate(run, tasks, folds) if folds else None
    state = load_file(base_dir / ADAPTERS_FILE)
    specs = dict(run.manifest.tasks)
    report: dict[str, Any] = {"feedback_rows": len(feedback), "held_out_rows": int(run.held.sum())}
    if cross_validation:
        report["cross_validation"] = cross_validation
    for task in tasks:
        new, details = run.fit(task)
        comparison = run.compare(task, run.old_head(task), new)
        logger.info("%s: %s", task.value, comparison)
        report[task.value] = {**details, "comparison": comparison}
        specs[task] = new.spec
        state[f"heads.{task.value}.1.weight"] = new.linear.weight.detach().half()
        state[f"heads.{task.value}.1.bias"] = new.linear.bias.detach().half()

    refuse_drops(report, options.max_drop)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, output_dir / ADAPTERS_FILE)
    base = run.manifest
    metrics = {
        f"{task.value}/{row['set']}/{when}": float(row[when])
        for task in tasks
        for row in report[task.value]["comparison"]
        for when in ("before", "after")
    }
    updated = base.model_copy(
        update={
            "version": version or f"{base.version}+feedback.{feedback_hash[:8]}",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "tasks": specs,
            "files": {ADAPTERS_FILE: sha256_file(output_dir / ADAPTERS_FILE)},
            "onnx": None,
            "metrics": {
                **base.metrics,
                "feedback": metrics,
                CROSS_VALIDATED: _still_valid(base.metrics, tasks)
                | flat_cross_validation(cross_validation or {}),
            },
            "training_data": {**base.training_data, FEEDBACK_SOURCE: feedback_hash},
            "config": {
                **base.config,
                "feedback": {"base": f"{base.name} {base.version}", **asdict(options)},
            },
        }
    )
    write_manifest(output_dir, updated)
    (output_dir / "feedback-report.json").write_text(json.dumps(report, indent=2) + "\n")
    if base.onnx is not None:
        export_onnx(
            output_dir, calibration_texts(run.catalog, list(run.plans.values())), encoder_dir
        )
    return read_manifest(output_dir)
