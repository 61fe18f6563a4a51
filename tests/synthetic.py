"""A tiny data directory with the same layout and formats as ../shared/data, made by the tests."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

POSITIVE = ["love", "great", "awesome", "thanks", "happy", "excellent", "wonderful"]
NEGATIVE = ["hate", "awful", "terrible", "worst", "broken", "angry", "useless"]
NEUTRAL = ["today", "tuesday", "the", "store", "opens", "at", "nine"]
SLURS = ["idiot", "moron", "stupid", "loser", "jerk"]
HATE = ["vermin", "invaders", "subhuman", "deport"]
NICE = ["friend", "lovely", "sunshine", "garden", "coffee"]


def _sentence(rng: random.Random, words: list[str], filler: list[str] = NEUTRAL) -> str:
    picked = rng.sample(words, 2) + rng.sample(filler, 2)
    rng.shuffle(picked)
    return " ".join(picked) + f" {rng.randint(0, 10_000)}"


def _write_split(folder: Path, split: str, rows: list[tuple[str, int]]) -> None:
    (folder / f"{split}_text.txt").write_text("".join(t + "\n" for t, _ in rows), encoding="utf-8")
    (folder / f"{split}_labels.txt").write_text(
        "".join(f"{y}\n" for _, y in rows), encoding="utf-8"
    )


def make_data_dir(root: Path, rows_per_class: int = 12, seed: int = 0) -> Path:
    """Write every data set the catalog reads, small and with learnable signal."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    by_task = {
        "sentiment": [NEGATIVE, NEUTRAL, POSITIVE],
        "offensive": [NICE, SLURS],
        "hate": [NICE, HATE],
        "emotion": [
            NEGATIVE,
            POSITIVE,
            ["hope", "soon", "tomorrow", "believe"],
            ["sad", "cry", "miss", "lonely"],
        ],
        "irony": [NICE, ["yeah", "right", "sure", "totally"]],
    }
    for task, vocabularies in by_task.items():
        folder = root / "tweeteval" / task
        folder.mkdir(parents=True)
        (folder / "mapping.txt").write_text("", encoding="utf-8")
        for split in ("train", "val", "test"):
            rows = [
                (_sentence(rng, vocab), label)
                for label, vocab in enumerate(vocabularies)
                for _ in range(rows_per_class)
            ]
            rng.shuffle(rows)
            _write_split(folder, split, rows)
    (root / "tweeteval" / "sentiment" / "train_text.txt").unlink()

    pool = root / "semeval2017_task4a" / "dataset" / "Subtask_A" / "downloaded"
    pool.mkdir(parents=True)
    names = ["negative", "neutral", "positive"]
    lines = [
        f"{1000 + i}\t{names[i % 3]}\t{_sentence(rng, [NEGATIVE, NEUTRAL, POSITIVE][i % 3])}"
        for i in range(rows_per_class * 6)
    ]
    # A duplicated id and a leaked copy of a TweetEval test tweet, formatted differently.
    lines.append(lines[0])
    leaked = (
        (root / "tweeteval/sentiment/test_text.txt").read_text(encoding="utf-8").splitlines()[0]
    )
    lines.append(f"9999\tneutral\t@someone {leaked.upper()} http://t.co/x\t")
    (pool / "twitter-2016train-A.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    davidson = root / "davidson_hate_offensive" / "data"
    davidson.mkdir(parents=True)
    with (davidson / "labeled_data.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["", "count", "hate_speech", "offensive_language", "neither", "class", "tweet"]
        )
        for i in range(rows_per_class * 3):
            klass = i % 3
            vocab = [HATE, SLURS, NICE][klass]
            writer.writerow([i, 3, 0, 0, 0, klass, _sentence(rng, vocab)])

    sst = root / "sst2" / "data" / "SST-2"
    sst.mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        rows = [
            f"{_sentence(rng, POSITIVE if i % 2 else NEGATIVE)}\t{i % 2}"
            for i in range(rows_per_class * 2)
        ]
        (sst / name).write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")

    brand = root / "brand_comments"
    brand.mkdir()
    questions = [
        "can you help me with my order?",
        "where is my refund?",
        "please fix this asap",
        "dm me please",
    ]
    statements = [
        "thanks for the quick reply",
        "my parcel arrived today",
        "love the new app",
        "the delay was annoying",
    ]
    with (brand / "dev.jsonl").open("w", encoding="utf-8") as handle:
        for i in range(rows_per_class * 2):
            question = i % 2
            text = f"@Brand {rng.choice(questions if question else statements)} #{i}"
            sentiment = ["negative", "neutral", "positive"][i % 3]
            record = {
                "id": f"d{i}",
                "text": text,
                "brand": "Brand",
                "question": question,
                "sentiment": sentiment,
                "offensive": int(i % 7 == 0),
            }
            handle.write(json.dumps(record) + "\n")
    with (brand / "unlabelled.jsonl").open("w", encoding="utf-8") as handle:
        for i in range(rows_per_class * 8):
            text = f"@Brand {rng.choice(questions + statements)} {rng.choice(NEUTRAL)} {i}"
            handle.write(json.dumps({"id": f"u{i}", "text": text}) + "\n")
    return root
