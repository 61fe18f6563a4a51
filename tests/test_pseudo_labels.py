"""Pseudo-labels: a teacher model's confident labels for the unlabelled comments (self-training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from commentdesk.settings import PROJECT_ROOT
from model.artifact import read_manifest, sha256_file
from model.scorer import Scorer
from model.tasks import Task
from training.catalog import PSEUDO_SOURCE, data_hashes, load_brand_unlabelled, load_catalog
from training.config import ConfigError, load_config
from training.pseudo_labels import pseudo_label_examples, pseudo_labelled, with_teacher
from training.transformer import train_transformer


def test_each_label_keeps_its_most_confident_share(
    tiny_scorer: Scorer, synthetic_data_dir: Path
) -> None:
    texts = load_brand_unlabelled(synthetic_data_dir)
    probabilities = tiny_scorer.score(texts).probabilities[Task.SENTIMENT]
    answers = np.array(["negative", "neutral", "positive"])[probabilities.argmax(axis=1)]
    confidence = dict(zip(texts, probabilities.max(axis=1), strict=True))

    rows = pseudo_label_examples(texts, tiny_scorer, [Task.SENTIMENT], 0.5)

    assert set(rows["source"]) == {PSEUDO_SOURCE} and set(rows["split"]) == {"train"}
    assert set(rows["task"]) == {"sentiment"}
    assert dict(zip(rows["text"], rows["label"], strict=True)) == {
        text: answer
        for text, answer in zip(texts, answers, strict=True)
        if text in set(rows["text"])
    }  # each kept text carries the teacher's answer
    for label in set(answers):
        given = [t for t, a in zip(texts, answers, strict=True) if a == label]
        kept = set(rows.loc[rows["label"] == label, "text"])
        assert len(kept) == -(-len(given) // 2)  # half of each label's texts, rounded up
        left_out = set(given) - kept
        if left_out:  # and the kept ones are the most confident
            assert min(confidence[t] for t in kept) >= max(confidence[t] for t in left_out)
    everything = pseudo_label_examples(texts, tiny_scorer, [Task.SENTIMENT], 1.0)
    assert len(everything) == len(texts)


def test_a_task_asking_for_pseudo_labels_needs_a_teacher(synthetic_data_dir: Path) -> None:
    config = load_config(PROJECT_ROOT / "configs" / "multitask.toml")
    assert pseudo_labelled(config, [], synthetic_data_dir, None) == []
    with pytest.raises(ConfigError, match=r"pseudo_labels\.teacher"):
        pseudo_labelled(config, [Task.SENTIMENT], synthetic_data_dir, None)
    config["pseudo_labels"] |= {"teacher": "some/model", "share": 0.0}
    with pytest.raises(ConfigError, match="share"):
        pseudo_labelled(config, [Task.SENTIMENT], synthetic_data_dir, None)


def test_pseudo_labels_join_training_and_are_cleaned_of_evaluation_texts(
    tiny_model_dir: Path, synthetic_data_dir: Path
) -> None:
    config = load_config(
        PROJECT_ROOT / "configs" / "multitask.toml",
        [f"pseudo_labels.teacher={tiny_model_dir}", "pseudo_labels.share=0.5"],
    )
    (extra,) = pseudo_labelled(config, [Task.SENTIMENT, Task.OFFENSIVE], synthetic_data_dir, None)
    assert set(extra["task"]) == {"sentiment", "offensive"}
    # A pseudo-labelled text that is also an evaluation text must not reach training.
    test_text = load_catalog(synthetic_data_dir).select(Task.SENTIMENT, "test")["text"].iloc[0]
    leaked = extra.iloc[:1].assign(text=test_text)
    catalog = load_catalog(synthetic_data_dir, [extra, leaked])
    trained_on = catalog.select(Task.SENTIMENT, "train", [PSEUDO_SOURCE])
    assert len(trained_on) == (extra["task"] == "sentiment").sum()
    assert test_text not in set(trained_on["text"])


def test_training_with_pseudo_labels_records_the_teacher(
    tiny_encoder_dir: Path, tiny_model_dir: Path, synthetic_data_dir: Path, tmp_path: Path
) -> None:
    overrides = [
        "optim.max_steps=10", "optim.eval_every=10", "optim.batch_size=8",
        "network.lora_rank=2", "network.max_length=16",
        f"pseudo_labels.teacher={tiny_model_dir}", "pseudo_labels.share=0.5",
        'tasks.sentiment.train_sources=["semeval2017", "brand_unlabelled-pseudo"]',
    ]  # fmt: skip
    config = load_config(PROJECT_ROOT / "configs" / "multitask.toml", overrides)
    config["base_encoder_sha256"] = sha256_file(tiny_encoder_dir / "model.safetensors")
    train_transformer(config, synthetic_data_dir, tmp_path, encoder_dir=tiny_encoder_dir)
    manifest = read_manifest(tmp_path)
    assert manifest.config["pseudo_labels"]["teacher"] == str(tiny_model_dir)
    # The data hash covers the teacher as well as the unlabelled file.
    file_hash = data_hashes(synthetic_data_dir, [PSEUDO_SOURCE])[PSEUDO_SOURCE]
    assert manifest.training_data[PSEUDO_SOURCE] == with_teacher(file_hash, config) != file_hash
    retrained = tmp_path / "retrained-teacher"
    retrained.mkdir()
    manifest_text = (tiny_model_dir / "manifest.json").read_text(encoding="utf-8")
    (retrained / "manifest.json").write_text(manifest_text.replace("{", "{ ", 1), encoding="utf-8")
    other = {"pseudo_labels": {"teacher": str(retrained)}}
    assert with_teacher(file_hash, other) != with_teacher(file_hash, config)
