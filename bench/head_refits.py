"""Two heads fitted again on the trained encoder's vectors, both recorded as not adopted.

1. Hate (last-layer re-training): the hate head of the model fitted again on the whole HatEval
   training split (`training.feedback.fit_head`, class weights, pulled toward the old head by
   each prior), then temperature and threshold fitted on validation as in training; macro-F1 on
   validation and test.
2. Brand sentiment: a per-class bias on the calibrated sentiment logits chosen on
   brand_comments dev (macro-recall, grid), 5-fold cross-validated there, and the bias chosen on
   all of dev applied to TweetEval sentiment validation.

Prints the tables of docs/experiments.md (2026-11-28 entries "Refitting the hate head" and "In-domain
signal for the question head"). PyTorch runtime; about 5 minutes on two cores.

Usage: python bench/head_refits.py [--data-dir ../shared/data] [--model-dir artifacts/minilm]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score, recall_score
from sklearn.model_selection import StratifiedKFold

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from commentdesk.settings import PUBLIC_MODEL_DIR, default_data_dir
from model.artifact import read_manifest
from model.scorer import TransformerScorer, softmax
from model.tasks import LABELS, Task
from training.calibration import fit_temperature
from training.catalog import Catalog, load_catalog
from training.feedback import fit_head
from training.metrics import best_threshold
from training.transformer import class_weights, pooled_vectors

PRIORS = (0.1, 1e-2, 1e-3, 1e-4, 0.0)
BIASES = [
    np.array([0.0, neutral, positive])
    for neutral in np.arange(-1.0, 2.01, 0.1)
    for positive in np.arange(-1.5, 1.51, 0.1)
]


def hate_refits(scorer: TransformerScorer, catalog: Catalog) -> None:
    splits = {s: catalog.select(Task.HATE, s, ["tweeteval-hate"]) for s in ("train", "val", "test")}
    x = {s: pooled_vectors(scorer.network, scorer.tokenizer, list(f["text"]), 64) for s, f in splits.items()}  # fmt: skip
    y = {s: (f["label"] == "hate").to_numpy().astype(int) for s, f in splits.items()}
    head = scorer.network.heads[Task.HATE.value][1]
    assert isinstance(head, torch.nn.Linear)

    def scores(linear: torch.nn.Linear) -> tuple[float, float]:
        with torch.no_grad():
            val, test = (linear(torch.as_tensor(x[s])).double().numpy() for s in ("val", "test"))
        temperature = fit_temperature(val, y["val"])
        threshold = best_threshold(y["val"] == 1, softmax(val, temperature)[:, 1], Task.HATE)
        return tuple(  # type: ignore[return-value]
            100 * f1_score(y[s], softmax(logits, temperature)[:, 1] >= threshold, average="macro")
            for s, logits in (("val", val), ("test", test))
        )

    print("| hate head | val macro-F1 | test macro-F1 |\n|---|---|---|")
    print("| trained jointly | {:.2f} | {:.2f} |".format(*scores(head)))
    weights = class_weights(y["train"], 2)
    for prior in PRIORS:
        refit = fit_head(head, x["train"], y["train"], np.ones(len(y["train"])), weights, prior)
        print(f"| refit, prior {prior:g} | " + "{:.2f} | {:.2f} |".format(*scores(refit)))


def sentiment_bias(scorer: TransformerScorer, catalog: Catalog) -> None:
    names = list(LABELS[Task.SENTIMENT])
    temperature = scorer.manifest.tasks[Task.SENTIMENT].temperature

    def logits_and_gold(source: str, split: str) -> tuple[np.ndarray, np.ndarray]:
        rows = catalog.select(Task.SENTIMENT, split, [source])
        vectors = torch.as_tensor(pooled_vectors(scorer.network, scorer.tokenizer, list(rows["text"]), 64))  # fmt: skip
        with torch.no_grad():
            logits = scorer.network.heads[Task.SENTIMENT.value](vectors).double().numpy()
        return logits / temperature, rows["label"].map(names.index).to_numpy()

    def recall(gold: np.ndarray, logits: np.ndarray, bias: np.ndarray) -> float:
        return float(100 * recall_score(gold, (logits + bias).argmax(1), average="macro"))

    def best(logits: np.ndarray, gold: np.ndarray) -> np.ndarray:
        return max(BIASES, key=lambda bias: recall(gold, logits, bias))

    brand, gold = logits_and_gold("brand_comments", "dev")
    out_of_fold = np.zeros(len(gold), dtype=int)
    for train, held in StratifiedKFold(5, shuffle=True, random_state=0).split(brand, gold):
        out_of_fold[held] = (brand[held] + best(brand[train], gold[train])).argmax(1)
    chosen = best(brand, gold)
    val, val_gold = logits_and_gold("tweeteval-sentiment", "val")
    zero = np.zeros(3)
    print(f"brand_comments dev macro-recall: as served {recall(gold, brand, zero):.1f}, "
          f"bias 5-fold cross-validated {100 * recall_score(gold, out_of_fold, average='macro'):.1f}")  # fmt: skip
    print(f"bias chosen on all of dev {np.round(chosen, 2).tolist()}: TweetEval sentiment val "
          f"{recall(val_gold, val, zero):.1f} -> {recall(val_gold, val, chosen):.1f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--model-dir", type=Path, default=PUBLIC_MODEL_DIR)
    args = parser.parse_args()
    if args.data_dir is None:
        sys.exit("no data directory (../shared/data)")
    scorer = TransformerScorer(args.model_dir, read_manifest(args.model_dir))
    catalog = load_catalog(args.data_dir)
    hate_refits(scorer, catalog)
    sentiment_bias(scorer, catalog)


if __name__ == "__main__":
    main()
