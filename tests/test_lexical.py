"""A transformer model's TF-IDF member (`commentdesk add-lexical`)."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from commentdesk.cli import app as cli
from model.artifact import LexicalSpec, read_manifest
from model.errors import ArtifactError
from model.linear import TfidfLinearModel
from model.scorer import TransformerScorer
from model.tasks import LABELS, Task
from training.evaluate import CROSS_VALIDATED
from training.feedback import load_feedback, text_buckets
from training.lexical import add_lexical_member, choose_weight


def _out_of_fold(decisions: Path, path: Path, network_question: float) -> None:
    """An out-of-fold file as `train --out-of-fold` writes it, with a network that cannot tell
    questions apart (the same question probability for every comment)."""
    texts = list(dict.fromkeys(load_feedback(decisions)["text"]))
    folds = text_buckets(load_feedback(decisions)["text"].drop_duplicates()) % 2
    rows = []
    for text, fold in zip(texts, folds, strict=True):
        scores = {t.value: {label: 1 / len(LABELS[t]) for label in LABELS[t]} for t in Task}
        scores["question"] = {"not-question": 1 - network_question, "question": network_question}
        rows.append({"text": text, "fold": int(fold), "scores": scores, "embedding": [1.0]})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_a_member_that_helps_is_added_and_served_blended(
    tiny_transformer_dir: Path,
    tiny_encoder_dir: Path,
    synthetic_data_dir: Path,
    brand_question_labels: Path,
    tiny_config: dict[str, object],
    tmp_path: Path,
) -> None:
    oof = tmp_path / "oof.jsonl"
    _out_of_fold(brand_question_labels, oof, network_question=0.4)
    output = tmp_path / "with-member"
    manifest, report = add_lexical_member(
        tiny_transformer_dir, load_feedback(brand_question_labels), oof, synthetic_data_dir,
        output, dict(tiny_config), "9.9.9", tmp_path / "served.jsonl",
    )  # fmt: skip
    # The synthetic questions and statements differ in wording: the member separates them and
    # the network (no better than a constant) gets a share below 1.
    assert manifest.lexical is not None and manifest.version == "9.9.9"
    weight = manifest.lexical.weights[Task.QUESTION]
    assert weight == report["question"]["weight"] < 1.0
    folded = report["question"]["cross_validation"]["brand_comments/dev"]
    assert folded["before"] == 0.0  # the network alone never reaches the 0.5 threshold
    assert folded["after"] > 80.0 and report["question"]["member_alone"] > 80.0
    assert manifest.metrics[CROSS_VALIDATED]["question/brand_comments/dev/after"] == folded["after"]
    assert {"lexical-vectorizers.json", "lexical-weights.npz"} <= set(manifest.files)
    # The served model's out-of-fold scores decide exactly the labels the nested figure counts.
    served = [json.loads(line) for line in (tmp_path / "served.jsonl").open()]
    gold = {row["text"]: row["label"] for row in map(json.loads, brand_question_labels.open())}
    hits = Counter(
        (gold[row["text"]], "question" if row["scores"]["question"]["question"] >= 0.5 else "not-question")
        for row in served
    )  # fmt: skip
    assert hits == Counter(
        {(g, p): n for g, row in folded["confusion"].items() for p, n in row.items() if n}
    )
    assert all(row["scores"]["sentiment"]["negative"] == 1 / 3 for row in served)
    # Served: the network's calibrated probability averaged with the member's.
    texts = ["@Brand where is my order?", "@Brand lovely service today"]
    alone = TransformerScorer(
        tiny_transformer_dir, read_manifest(tiny_transformer_dir), tiny_encoder_dir
    )
    blended = TransformerScorer(output, manifest, tiny_encoder_dir)
    member = TfidfLinearModel.load(output, [Task.QUESTION], "lexical-").predict_proba(texts)
    network = alone.score(texts).probabilities
    served = blended.score(texts).probabilities
    expected = weight * network[Task.QUESTION] + (1 - weight) * member[Task.QUESTION]
    assert np.allclose(served[Task.QUESTION], expected, atol=2e-3)  # fp16 adapters
    assert np.allclose(served[Task.SENTIMENT], network[Task.SENTIMENT], atol=2e-3)
    # Adapting or refitting the network later drops the member fitted beside the old one.
    with pytest.raises(ValueError, match="lexical member"):
        from training.transformer import recalibrate_model

        recalibrate_model(output, synthetic_data_dir, tmp_path / "again", "1", tiny_encoder_dir)


def test_choose_weight_prefers_the_network_on_ties() -> None:
    gold = np.array(["question", "not-question"] * 10, dtype=object)
    right = np.array([[0.1, 0.9], [0.9, 0.1]] * 10)
    wrong = right[:, ::-1]
    assert choose_weight(Task.QUESTION, gold, right, right, 0.5) == 1.0
    # Every share under 0.5 lets the right member win; the tie goes to the largest of them.
    assert choose_weight(Task.QUESTION, gold, wrong, right, 0.5) == 0.4
    assert choose_weight(Task.QUESTION, gold, wrong, wrong, 0.5) == 1.0  # nothing helps


def test_add_lexical_refuses_bad_inputs_and_writes_nothing(
    tiny_transformer_dir: Path,
    tiny_model_dir: Path,
    synthetic_data_dir: Path,
    brand_question_labels: Path,
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    oof = tmp_path / "oof.jsonl"
    _out_of_fold(brand_question_labels, oof, network_question=0.4)
    base = [
        "--feedback",
        str(brand_question_labels),
        "--version",
        "2",
        "--data-dir",
        str(synthetic_data_dir),
    ]
    cases = {
        "lacks": oof.read_text().splitlines()[1:],  # a decision missing
        "no fold per row": [
            json.dumps({k: v for k, v in json.loads(line).items() if k != "fold"})
            for line in oof.read_text().splitlines()
        ],
        "not an out-of-fold file": ["{not json"],
    }
    for message, lines in cases.items():
        broken = tmp_path / f"{len(message)}.jsonl"
        broken.write_text("\n".join(lines) + "\n")
        out = tmp_path / f"out-{len(message)}"
        result = runner.invoke(
            cli, ["add-lexical", str(tiny_transformer_dir), "--out-of-fold", str(broken), "--output-dir", str(out), *base]
        )  # fmt: skip
        assert result.exit_code == 2 and message in result.output, result.output
        assert not out.exists()
    # Only a transformer takes a member; a network that already separates gets none.
    result = runner.invoke(
        cli, ["add-lexical", str(tiny_model_dir), "--out-of-fold", str(oof), "--output-dir", str(tmp_path / "x"), *base]
    )  # fmt: skip
    assert result.exit_code == 2 and "only a transformer" in result.output
    perfect = tmp_path / "perfect.jsonl"
    rows = [json.loads(line) for line in oof.read_text().splitlines()]
    gold = {row["text"]: row["label"] for row in map(json.loads, brand_question_labels.open())}
    for row in rows:
        q = float(gold[row["text"]] == "question")
        row["scores"]["question"] = {"not-question": 1 - q, "question": q}
    perfect.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = runner.invoke(
        cli, ["add-lexical", str(tiny_transformer_dir), "--out-of-fold", str(perfect), "--output-dir", str(tmp_path / "y"), *base]
    )  # fmt: skip
    assert result.exit_code == 2 and "favour the network alone" in result.output
    assert not (tmp_path / "y").exists()


def test_the_manifest_rejects_a_member_it_cannot_serve(
    tiny_transformer_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    cases = [
        (tiny_transformer_dir, {"prefix": "lexical-", "weights": {"question": 0.5}}, "listed in files"),
        (tiny_transformer_dir, {"prefix": "adapters", "weights": {"question": 1.5}}, "in [0, 1]"),
        (tiny_model_dir, {"prefix": "weights", "weights": {"question": 0.5}}, "only a transformer"),
    ]  # fmt: skip
    for source, spec, message in cases:
        copy = tmp_path / f"copy-{len(message)}"
        shutil.copytree(source, copy)
        manifest = read_manifest(copy)
        raw = json.loads(manifest.model_dump_json())
        raw["lexical"] = spec
        (copy / "manifest.json").write_text(json.dumps(raw))
        with pytest.raises(ArtifactError, match=re.escape(message)):
            read_manifest(copy)
    assert LexicalSpec(prefix="p", weights={Task.QUESTION: 0.0}).weights[Task.QUESTION] == 0.0
