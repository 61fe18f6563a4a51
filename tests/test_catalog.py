from pathlib import Path

import pytest

from model.tasks import LABELS, Task
from training.catalog import (
    COLUMNS,
    DataError,
    load_catalog,
    load_davidson,
    load_semeval_pool,
    overlap_table,
)
from training.questions import weak_question_label


def test_catalog_has_one_schema_and_valid_labels(synthetic_data_dir: Path) -> None:
    examples = load_catalog(synthetic_data_dir).examples
    assert list(examples.columns) == COLUMNS
    for task_name, group in examples.groupby("task"):
        assert set(group["label"]) <= set(LABELS[Task(task_name)])
    assert set(examples["split"]) == {"train", "val", "test", "dev"}
    assert not examples["text"].str.strip().eq("").any()


def test_sentiment_has_no_tweeteval_training_rows(synthetic_data_dir: Path) -> None:
    catalog = load_catalog(synthetic_data_dir)
    assert catalog.select(Task.SENTIMENT, "train", ["tweeteval-sentiment"]).empty
    assert not catalog.select(Task.SENTIMENT, "train", ["semeval2017"]).empty


def test_semeval_pool_drops_duplicate_ids_and_leaked_tweets(synthetic_data_dir: Path) -> None:
    pool = load_semeval_pool(synthetic_data_dir)
    catalog = load_catalog(synthetic_data_dir)
    kept = catalog.select(Task.SENTIMENT, "train", ["semeval2017"])
    # The fixture adds one repeated id and one test tweet copied with other case, mention and URL.
    assert len(pool) == 12 * 6 + 1
    assert catalog.removed["semeval2017"] == 1
    assert len(kept) == len(pool) - 1


def test_overlap_is_zero_after_cleaning(synthetic_data_dir: Path) -> None:
    overlaps = overlap_table(load_catalog(synthetic_data_dir).examples)
    assert len(overlaps) > 0
    assert overlaps["overlap"].sum() == 0


def test_overlap_table_counts_leaks_before_cleaning(synthetic_data_dir: Path) -> None:
    import pandas as pd

    leaked = pd.DataFrame(
        [
            ("Same text!", "irony", "irony", "train", "a"),
            ("same TEXT", "irony", "irony", "test", "b"),
        ],
        columns=COLUMNS,
    )
    table = overlap_table(leaked)
    assert table.loc[0, "overlap"] == 1


def test_davidson_split_is_fixed_and_stratified(synthetic_data_dir: Path) -> None:
    first, second = load_davidson(synthetic_data_dir), load_davidson(synthetic_data_dir)
    assert first.equals(second)
    hate = first[first["task"] == "hate"]
    for split in ("train", "val", "test"):
        assert (hate[hate["split"] == split]["label"] == "hate").any()


def test_malformed_pool_line_names_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "semeval2017_task4a/dataset/Subtask_A/downloaded"
    folder.mkdir(parents=True)
    (folder / "x.tsv").write_text("1\tpositive\tok\n2\tgreat\toops\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"x.tsv:2"):
        load_semeval_pool(tmp_path)


def test_missing_data_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_catalog(tmp_path / "absent")


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("@AmazonHelp can you check my order?", 1),
        ("@Delta please help, my bag is lost", 1),
        ("@SpotifyCares DM sent", 1),
        ("How do I reset my password", 1),
        ("@Tesco thanks so much, all sorted", 0),
        ("@Uber the driver was late again", 0),
        ("are you kidding me?", 0),
    ],
)
def test_weak_question_rules(text: str, label: int) -> None:
    assert weak_question_label(text) == label
