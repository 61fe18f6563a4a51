"""Every labelled data set in the shared data directory, read into one schema.

Schema (one row per example and task): ``text`` (raw), ``task`` (a Task value), ``label`` (a label
name of that task), ``split`` (train, val, test or dev) and ``source``. Cleaning removes from every
training split each text that also appears, after `dedup_key`, in any evaluation split.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from model.tasks import LABELS, Task
from model.text import dedup_key
from training.questions import weak_question_examples

logger = logging.getLogger(__name__)

COLUMNS = ["text", "task", "label", "split", "source"]
EVAL_SPLITS = ("val", "test", "dev")
DAVIDSON_SEED = 20170311
TWEETEVAL_TASKS = (Task.SENTIMENT, Task.OFFENSIVE, Task.HATE, Task.EMOTION, Task.IRONY)
SEMEVAL_DIR = Path("semeval2017_task4a/dataset/Subtask_A/downloaded")
DAVIDSON_FILE = Path("davidson_hate_offensive/data/labeled_data.csv")
SST2_DIR = Path("sst2/data/SST-2")
BRAND_DEV = Path("brand_comments/dev.jsonl")
BRAND_UNLABELLED = Path("brand_comments/unlabelled.jsonl")
WEAK_QUESTION_SOURCE = "brand_unlabelled-weak"
PSEUDO_SOURCE = "brand_unlabelled-pseudo"  # a teacher model's labels (training.pseudo_labels)


class DataError(Exception):
    """A data file is missing or not in the documented format."""


def _frame(rows: Iterable[tuple[str, str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=COLUMNS)


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"missing data file {path}")
    return path.read_text(encoding="utf-8").splitlines()


def load_tweeteval(data_dir: Path) -> pd.DataFrame:
    """TweetEval's official splits; sentiment has no training text and contributes val and test."""
    rows = []
    for task in TWEETEVAL_TASKS:
        folder = data_dir / "tweeteval" / task.value
        for split in ("train", "val", "test"):
            if task is Task.SENTIMENT and split == "train":
                continue
            texts = _read_lines(folder / f"{split}_text.txt")
            labels = _read_lines(folder / f"{split}_labels.txt")
            if len(texts) != len(labels):
                raise DataError(f"{folder}/{split}: {len(texts)} texts but {len(labels)} labels")
            names = LABELS[task]
            for text, label in zip(texts, labels, strict=True):
                rows.append((text, task.value, names[int(label)], split, f"tweeteval-{task.value}"))
    return _frame(rows)


def load_semeval_pool(data_dir: Path) -> pd.DataFrame:
    """The SemEval-2017 4A pool (2013-2016) as sentiment training data, one row per distinct id."""
    folder = data_dir / SEMEVAL_DIR
    files = sorted(folder.glob("*.tsv"))
    if not files:
        raise DataError(f"no SemEval-2017 .tsv files in {folder}")
    rows, seen = [], set()
    for path in files:
        for number, line in enumerate(_read_lines(path), start=1):
            parts = line.rstrip("\t").split("\t", 2)
            if len(parts) != 3 or parts[1] not in LABELS[Task.SENTIMENT]:
                raise DataError(f"{path}:{number}: expected 'id<TAB>label<TAB>text'")
            tweet_id, label, text = parts
            if tweet_id in seen:
                continue
            seen.add(tweet_id)
            rows.append((text, Task.SENTIMENT.value, label, "train", "semeval2017"))
    return _frame(rows)


def load_davidson(data_dir: Path) -> pd.DataFrame:
    """Davidson et al. 2017 for both offensive (hate or offensive) and hate, with a fixed split."""
    path = data_dir / DAVIDSON_FILE
    if not path.is_file():
        raise DataError(f"missing data file {path}")
    table = pd.read_csv(path, usecols=["class", "tweet"])
    train, rest = train_test_split(
        table, test_size=0.2, stratify=table["class"], random_state=DAVIDSON_SEED
    )
    val, test = train_test_split(
        rest, test_size=0.5, stratify=rest["class"], random_state=DAVIDSON_SEED
    )
    rows = []
    for split, part in (("train", train), ("val", val), ("test", test)):
        for text, klass in zip(part["tweet"], part["class"], strict=True):
            offensive = LABELS[Task.OFFENSIVE][int(klass in (0, 1))]
            hate = LABELS[Task.HATE][int(klass == 0)]
            rows.append((text, Task.OFFENSIVE.value, offensive, split, "davidson"))
            rows.append((text, Task.HATE.value, hate, split, "davidson"))
    return _frame(rows)


def load_sst2(data_dir: Path) -> pd.DataFrame:
    """SST-2 movie-review polarity: negative/positive only; an out-of-domain check."""
    rows = []
    for split, name in (("train", "train.tsv"), ("val", "dev.tsv"), ("test", "test.tsv")):
        path = data_dir / SST2_DIR / name
        table = pd.read_csv(path, sep="\t", quoting=3, dtype={"sentence": str, "label": int})
        for text, label in zip(table["sentence"], table["label"], strict=True):
            polarity = "positive" if label == 1 else "negative"
            rows.append((text.strip(), Task.SENTIMENT.value, polarity, split, "sst2"))
    return _frame(rows)


def load_brand_dev(data_dir: Path) -> pd.DataFrame:
    """The in-domain check: customer comments to brands, labelled for three tasks."""
    rows = []
    path = data_dir / BRAND_DEV
    for number, line in enumerate(_read_lines(path), start=1):
        try:
            item = json.loads(line)
            text = item["text"]
            rows.append((text, "question", LABELS[Task.QUESTION][int(item["question"])]))
            rows.append((text, "sentiment", str(item["sentiment"])))
            rows.append((text, "offensive", LABELS[Task.OFFENSIVE][int(item["offensive"])]))
        except (json.JSONDecodeError, KeyError, ValueError) as exc:
            raise DataError(f"{path}:{number}: {exc}") from exc
    return _frame((text, task, label, "dev", "brand_comments") for text, task, label in rows)


def load_brand_unlabelled(data_dir: Path) -> list[str]:
    """Unlabelled in-domain comments (for weak labels and realistic benchmarks)."""
    path = data_dir / BRAND_UNLABELLED
    return [json.loads(line)["text"] for line in _read_lines(path) if line.strip()]


LOADERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "tweeteval": load_tweeteval,
    "semeval2017": load_semeval_pool,
    "davidson": load_davidson,
    "sst2": load_sst2,
    "brand_comments": load_brand_dev,
}

SOURCE_FILES: dict[str, list[str]] = {
    "tweeteval": ["tweeteval"],
    "semeval2017": [str(SEMEVAL_DIR)],
    "davidson": [str(DAVIDSON_FILE)],
    "sst2": [str(SST2_DIR)],
    "brand_comments": [str(BRAND_DEV), str(BRAND_UNLABELLED)],
}
SOURCE_FILES[WEAK_QUESTION_SOURCE] = [str(BRAND_UNLABELLED)]
SOURCE_FILES[PSEUDO_SOURCE] = [str(BRAND_UNLABELLED)]


@dataclass
class Catalog:
    """All examples after cleaning, plus what cleaning removed."""

    examples: pd.DataFrame
    removed: dict[str, int] = field(default_factory=dict)

    def select(self, task: Task, split: str, sources: Iterable[str] | None = None) -> pd.DataFrame:
        frame = self.examples
        mask = (frame["task"] == task.value) & (frame["split"] == split)
        if sources is not None:
            mask &= frame["source"].isin(list(sources))
        return frame[mask]


def remove_leakage(examples: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop every training row whose text matches any evaluation row of any task or source."""
    keys = examples["text"].map(dedup_key)
    is_eval = examples["split"].isin(EVAL_SPLITS)
    eval_keys = set(keys[is_eval]) - {""}
    leaked = ~is_eval & keys.isin(eval_keys)
    removed = examples[leaked].groupby("source").size().to_dict()
    return examples[~leaked].reset_index(drop=True), {str(k): int(v) for k, v in removed.items()}


def load_catalog(data_dir: Path, extra: Iterable[pd.DataFrame] = ()) -> Catalog:
    """Load every data set, the weak question labels and any extra rows, then clean leakage."""
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist")
    frames = [loader(data_dir) for loader in LOADERS.values()]
    weak = weak_question_examples(load_brand_unlabelled(data_dir), WEAK_QUESTION_SOURCE)
    examples = pd.concat([*frames, weak, *extra], ignore_index=True)
    cleaned, removed = remove_leakage(examples)
    for source, count in removed.items():
        logger.info("removed %d training rows of %s that match evaluation rows", count, source)
    return Catalog(cleaned, removed)


def overlap_table(examples: pd.DataFrame) -> pd.DataFrame:
    """Texts shared between each training set and each evaluation set (by `dedup_key`)."""
    keys = examples.assign(key=examples["text"].map(dedup_key))
    keys = keys[keys["key"] != ""]
    groups = {name: set(group["key"]) for name, group in keys.groupby(["source", "task", "split"])}
    rows = []
    for (t_source, t_task, t_split), t_keys in groups.items():
        if t_split != "train":
            continue
        for (e_source, e_task, e_split), e_keys in groups.items():
            if e_split in EVAL_SPLITS:
                rows.append(
                    {
                        "train": f"{t_source}/{t_task}",
                        "eval": f"{e_source}/{e_task}/{e_split}",
                        "overlap": len(t_keys & e_keys),
                    }
                )
    return pd.DataFrame(rows, columns=["train", "eval", "overlap"])


def data_hashes(data_dir: Path, sources: Iterable[str] = LOADERS) -> dict[str, str]:
    """One sha256 per source over its files' names and bytes, for the manifest."""
    hashes = {}
    for source in sources:
        digest = hashlib.sha256()
        for relative in SOURCE_FILES[source]:
            root = data_dir / relative
            files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
            for path in files:
                digest.update(str(path.relative_to(data_dir)).encode())
                digest.update(path.read_bytes())
        hashes[source] = digest.hexdigest()
    return hashes


def source_hashes(data_dir: Path, sources: Iterable[str]) -> dict[str, str]:
    """Hashes of the data sets behind catalog sources ("tweeteval-hate" -> "tweeteval"); rows
    that come from no file (moderator feedback) are hashed by their caller."""
    files = {s if s in SOURCE_FILES else s.split("-")[0] for s in sources}
    return data_hashes(data_dir, sorted(files & set(SOURCE_FILES)))
