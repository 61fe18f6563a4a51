"""Reply suggestions: latency with 200 templates, and top-1 intent agreement on brand_comments dev.

Latency: p50/p95 of one suggestion (embed the comment, rank 200 templates) with the template
embeddings cached, beside the same call re-embedding every template's examples (no cache).
Quality: for each brand_comments dev comment, does the top-1 template answer the comment's gold
intent (question -> an answering template; negative non-question -> complaint; positive
non-question -> praise)? Neutral non-questions have no expected intent and are not counted.

With --gold-labels the question and sentiment probabilities of each dev comment are replaced by
its gold labels (one-hot): the ranking's ceiling when the classifiers are right.

The default model is artifacts/minilm, which never saw brand_comments dev: the served default
(artifacts/minilm-brand) learned that set's question and sentiment labels, so its own figure here
would be in-sample. With --out-of-fold FILE (written by `make brand-model`), each dev comment's
scores and embedding come instead from the cross-validation fold model that never saw it, and
that fold model (the served network with the fold's adapters, kept beside FILE) embeds the
templates, so comments and templates are compared in one space: the out-of-sample figure for
the served model.

Usage: python bench/bench_replies.py [--model-dir DIR] [--comments N]
    [--gold-labels | --out-of-fold FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from commentdesk.settings import PUBLIC_MODEL_DIR, Settings, default_data_dir
from model.artifact import read_manifest
from model.scorer import Embedder, TransformerScorer, load_scorer
from service.app import embedder_factory
from service.db.engine import make_engine, make_sessionmaker, upgrade
from service.db.tables import ReplyTemplate
from service.replies import ReplySuggester, load_defaults
from service.scoring import prediction_fields
from service.templates import Intent
from training.adaptation import fold_adapters_file
from training.transformer import pooled_vectors


class OutOfFoldEmbedder:
    """Embeds texts with the served model, except those with an out-of-fold embedding."""

    def __init__(self, served: Embedder, known: dict[str, list[float]]):
        self.served, self.known = served, known

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if all(t in self.known for t in texts):
            return np.array([self.known[t] for t in texts], dtype=np.float32)
        return self.served.embed(texts)


class FoldEmbedder:
    """A cross-validation fold's model: the served network with that fold's adapters."""

    def __init__(self, network: TransformerScorer, adapters: Path):
        self.network, self.state = network, load_file(adapters)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.network.network.load_trainable_state(self.state)
        vectors = pooled_vectors(self.network.network, self.network.tokenizer, list(texts), 64)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
        return unit.astype(np.float32)


def expected_intent(item: dict[str, object]) -> Intent | None:
    if item["question"] == 1:
        return Intent.QUESTION
    if item["sentiment"] == "negative":
        return Intent.COMPLAINT
    if item["sentiment"] == "positive":
        return Intent.PRAISE
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, default=PUBLIC_MODEL_DIR)
    parser.add_argument("--comments", type=int, default=200)
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--gold-labels", action="store_true")
    labels.add_argument("--out-of-fold", type=Path)
    args = parser.parse_args()
    data_dir = default_data_dir()
    if data_dir is None:
        sys.exit("no data directory")
    dev = [
        json.loads(line)
        for line in (data_dir / "brand_comments" / "dev.jsonl").read_text().splitlines()
    ]
    unlabelled = [
        json.loads(line)["text"]
        for line in (data_dir / "brand_comments" / "unlabelled.jsonl").read_text().splitlines()
    ]
    scorer = load_scorer(args.model_dir)
    # The embedder the service would use with this model (the ONNX model's own, or MiniLM).
    embedder = embedder_factory(Settings(model_dir=args.model_dir), scorer)()
    out_of_fold = {}
    if args.out_of_fold:
        out_of_fold = {
            row["text"]: row for row in map(json.loads, args.out_of_fold.open(encoding="utf-8"))
        }
        if missing := [d["text"] for d in dev if d["text"] not in out_of_fold]:
            sys.exit(f"{args.out_of_fold} lacks {len(missing)} dev comments")
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/replies.db"
        upgrade(url)
        sessions = make_sessionmaker(make_engine(url))
        with sessions() as session:
            defaults = load_defaults(session)
            intents = [i.value for i in Intent]
            for n in range(200 - defaults):
                session.add(ReplyTemplate(name=f"extra {n}", intents=[rng.choice(intents)], body="Hi {author|there}, thanks!",
                                          examples=rng.sample(unlabelled, 3)))  # fmt: skip
            session.commit()
            suggester = ReplySuggester(lambda: embedder)
            sample = rng.sample(unlabelled, args.comments)
            fields = [prediction_fields(p) for p in scorer.predict(sample)]
            suggester.suggest(session, sample[0], fields[0]["scores"], {}, 3)  # warm the cache
            timings = {"cached": [], "uncached": []}
            for text, f in zip(sample, fields, strict=True):
                start = time.perf_counter()
                suggester.suggest(session, text, f["scores"], {}, 3)
                timings["cached"].append(time.perf_counter() - start)
            for text, f in zip(sample[:5], fields[:5], strict=True):
                cold = ReplySuggester(lambda: embedder)  # nothing cached: embeds all examples
                start = time.perf_counter()
                cold.suggest(session, text, f["scores"], {}, 3)
                timings["uncached"].append(time.perf_counter() - start)
            for name, values in timings.items():
                ms = np.array(values) * 1000
                print(
                    f"suggest, 200 templates, {name:<9} p50 {np.percentile(ms, 50):7.1f} ms  p95 {np.percentile(ms, 95):7.1f} ms  (n={len(ms)})"
                )
            print(
                f"cache speed-up at p95: {np.percentile(timings['uncached'], 95) / np.percentile(timings['cached'], 95):.0f}x"
            )

            # Quality with the default library only.
            session.query(ReplyTemplate).filter(ReplyTemplate.name.like("extra %")).delete()
            session.commit()
            dev_fields = [prediction_fields(p) for p in scorer.predict([d["text"] for d in dev])]
            suggesters = {-1: ReplySuggester(lambda: embedder)}  # fold -> its suggester
            if out_of_fold:
                known = {text: row["embedding"] for text, row in out_of_fold.items()}
                network = TransformerScorer(args.model_dir, read_manifest(args.model_dir))
                for fold in {row["fold"] for row in out_of_fold.values()}:
                    folded = FoldEmbedder(network, fold_adapters_file(args.out_of_fold, fold))
                    suggesters[fold] = ReplySuggester(partial(OutOfFoldEmbedder, folded, known))
                for item, f in zip(dev, dev_fields, strict=True):
                    f["scores"] = out_of_fold[item["text"]]["scores"]
                    f["fold"] = out_of_fold[item["text"]]["fold"]
            if args.gold_labels:
                for item, f in zip(dev, dev_fields, strict=True):
                    q = float(item["question"])
                    f["scores"]["question"] = {"not-question": 1 - q, "question": q}
                    f["scores"]["sentiment"] = {
                        s: float(s == item["sentiment"])
                        for s in ("negative", "neutral", "positive")
                    }
            confusion: Counter[tuple[str, str]] = Counter()
            hits = total = 0
            for item, f in zip(dev, dev_fields, strict=True):
                want = expected_intent(item)
                if want is None:
                    continue
                suggester = suggesters[f.get("fold", -1)]
                top = suggester.suggest(session, str(item["text"]), f["scores"], {}, 1)[0]
                total += 1
                hits += want.value in top.template.intents
                confusion[(want.value, "/".join(top.template.intents))] += 1
            print(
                f"\ntop-1 template answers the gold intent: {hits}/{total} = {hits / total:.1%} (model {scorer.name} {scorer.version}{', gold question/sentiment labels' if args.gold_labels else ''}{', out-of-fold scores and embeddings' if out_of_fold else ''})"
            )
            print("gold intent -> top-1 template intents: count")
            for (want, got), count in sorted(confusion.items()):
                print(f"  {want:<10} -> {got:<20} {count}")


if __name__ == "__main__":
    main()
