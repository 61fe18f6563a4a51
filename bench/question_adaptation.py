"""Cross-validated in-domain adaptation of the encoder for the question task (issue #3).

Starts from a model that never saw brand_comments dev (default artifacts/minilm), splits dev
into folds by text hash (as ``commentdesk train --feedback --folds`` does), adapts the encoder
on the other folds plus weak-label rows while distilling the other heads, and decides each
held-out fold. Prints the out-of-fold question F1 next to the unadapted model's, and the other
tasks' validation metrics after adapting on the first fold's training part.

    .venv/bin/python bench/question_adaptation.py [--folds 5] [--steps 200] [--only-fold K]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from model.artifact import read_manifest
from model.scorer import TransformerScorer, decide_rows, softmax
from model.tasks import LABELS, Task
from model.text import dedup_key
from training.adaptation import AdaptationOptions, adapt_encoder, teacher_logits
from training.catalog import load_catalog
from training.feedback import text_buckets
from training.metrics import official_metric
from training.transformer import predict_logits, task_plans


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, default=Path("artifacts/minilm"))
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only-fold", type=int, default=None)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--distill-weight", type=float, default=1.0)
    parser.add_argument("--anchor-rows", type=int, default=4000)
    parser.add_argument("--replay-per-task", type=int, default=600)
    parser.add_argument("--check-val", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)

    manifest = read_manifest(args.model_dir)
    scorer = TransformerScorer(args.model_dir, manifest)
    network, tokenizer = scorer.network, scorer.tokenizer
    base_state = network.trainable_state()
    catalog = load_catalog(args.data_dir)
    plans = {plan.task: plan for plan in task_plans(manifest.config)}
    task, names = Task.QUESTION, list(LABELS[Task.QUESTION])
    spec = manifest.tasks[task]
    rng = np.random.default_rng(0)

    dev = catalog.select(task, "dev", ["brand_comments"]).reset_index(drop=True)
    dev_labels = dev["label"].map(names.index).to_numpy()
    fold_of = text_buckets(dev["text"]) % args.folds
    dev_keys = set(dev["text"].map(dedup_key))
    weak = catalog.select(task, "train", plans[task].train_sources)
    weak = weak[~weak["text"].map(dedup_key).isin(dev_keys)]
    weak = weak.iloc[rng.permutation(len(weak))]
    anchors = weak.iloc[: args.anchor_rows]
    anchor_labels = anchors["label"].map(names.index).to_numpy()
    # Replayed texts: in-domain comments the anchors do not use, plus each other task's data.
    replay_texts = list(weak["text"].iloc[args.anchor_rows : args.anchor_rows + 2000])
    others = [t for t in manifest.tasks if t is not task]
    for other in others:
        rows = catalog.select(other, "train", plans[other].train_sources)
        replay_texts += list(rows["text"].iloc[rng.permutation(len(rows))[: args.replay_per_task]])
    started = time.perf_counter()
    targets = teacher_logits(network, tokenizer, replay_texts, others)
    print(
        f"teacher logits for {len(replay_texts)} replayed texts: {time.perf_counter() - started:.0f} s"
    )

    def question_labels(texts: list[str]) -> list[str]:
        logits = predict_logits(network, tokenizer, texts, task, 64)
        return list(decide_rows(task, softmax(logits, spec.temperature), spec.threshold))

    def val_metrics() -> dict[str, float]:
        scores = {}
        for other in others:
            val = catalog.select(other, "val", [plans[other].val_source])
            logits = predict_logits(network, tokenizer, list(val["text"]), other, 64)
            predicted = decide_rows(
                other,
                softmax(logits, manifest.tasks[other].temperature),
                manifest.tasks[other].threshold,
            )
            scores[other.value] = round(
                100 * official_metric(other, list(val["label"]), list(predicted)), 2
            )
        return scores

    gold = list(dev["label"])
    before = question_labels(list(dev["text"]))
    print(
        f"unadapted {manifest.name} {manifest.version}: question F1 on dev "
        f"{100 * official_metric(task, gold, before):.2f}"
    )
    if args.check_val:
        print("validation before:", val_metrics())
    options = AdaptationOptions(
        steps=args.steps, lr=args.lr, batch_size=args.batch_size, distill_weight=args.distill_weight
    )
    after = np.array(before, dtype=object)
    folds = [args.only_fold] if args.only_fold is not None else range(args.folds)
    for fold in folds:
        network.load_trainable_state(base_state)
        train = fold_of != fold
        started = time.perf_counter()
        adapt_encoder(
            network,
            tokenizer,
            task,
            (list(dev["text"][train]), dev_labels[train]),
            (list(anchors["text"]), anchor_labels),
            (replay_texts, targets),
            options,
        )
        held = np.flatnonzero(~train)
        after[held] = question_labels([dev["text"][i] for i in held])
        fold_before = official_metric(task, [gold[i] for i in held], [before[i] for i in held])
        fold_after = official_metric(task, [gold[i] for i in held], list(after[held]))
        print(
            f"fold {fold}: {len(held)} rows, F1 {100 * fold_before:.2f} -> {100 * fold_after:.2f} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        if args.check_val and fold == folds[0]:
            print("validation after:", val_metrics(), flush=True)
    if args.only_fold is None:
        print(
            f"out-of-fold question F1: {100 * official_metric(task, gold, before):.2f} -> "
            f"{100 * official_metric(task, gold, list(after)):.2f}"
        )


if __name__ == "__main__":
    main()
