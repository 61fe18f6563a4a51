import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from model.artifact import MANIFEST, read_manifest
from model.errors import ArtifactError
from model.scorer import Scorer, load_scorer
from model.tasks import LABELS, Task

TEXTS = ["I love this, thanks!", "you are an idiot", "can you help me with my refund?", "😀 شكرا"]


def test_trained_model_covers_every_task(tiny_scorer: Scorer) -> None:
    assert set(tiny_scorer.tasks) == set(Task)
    for prediction in tiny_scorer.predict(TEXTS):
        for task in Task:
            probs = prediction.scores[task]
            assert list(probs) == list(LABELS[task])
            assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
            assert prediction.labels[task] in LABELS[task]


def test_model_learned_the_synthetic_signal(tiny_scorer: Scorer) -> None:
    negative, positive = tiny_scorer.predict(
        ["hate awful terrible worst", "love great awesome happy"]
    )
    assert negative.labels[Task.SENTIMENT] == "negative"
    assert positive.labels[Task.SENTIMENT] == "positive"


def test_save_load_round_trip_gives_identical_scores(tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    original, reloaded = load_scorer(tiny_model_dir), load_scorer(copy)
    for a, b in zip(original.predict(TEXTS), reloaded.predict(TEXTS), strict=True):
        assert a == b


def test_manifest_records_what_produced_the_model(tiny_model_dir: Path) -> None:
    manifest = read_manifest(tiny_model_dir)
    assert manifest.kind == "tfidf-linear"
    assert set(manifest.files) == {"vectorizers.json", "weights.npz"}
    assert {"python", "scikit-learn", "numpy"} <= set(manifest.library_versions)
    assert "semeval2017" in manifest.training_data
    assert manifest.tasks[Task.OFFENSIVE].threshold is not None
    assert manifest.tasks[Task.SENTIMENT].threshold is None
    assert set(manifest.metrics["val"]) == {"sentiment", "offensive", "hate", "emotion", "irony"}


def _broken_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_missing_directory_and_manifest_are_rejected(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        load_scorer(tmp_path / "absent")
    broken = _broken_copy(tiny_model_dir, tmp_path / "m")
    (broken / MANIFEST).unlink()
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        load_scorer(broken)


def test_tampered_or_missing_weights_are_rejected(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = _broken_copy(tiny_model_dir, tmp_path / "m")
    with (broken / "weights.npz").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactError, match="does not match the sha256"):
        load_scorer(broken)
    (broken / "weights.npz").unlink()
    with pytest.raises(ArtifactError, match=r"incomplete: weights\.npz is missing"):
        load_scorer(broken)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["tasks"]["sentiment"].update(labels=["neg", "pos"]), "labels"),
        (lambda m: m.update(kind="pickle"), "kind"),
        (lambda m: m.update(format_version=99), "format_version"),
        (lambda m: m["tasks"].update(toxicity={"labels": ["a", "b"]}), "toxicity"),
        (lambda m: m["tasks"]["emotion"].update(threshold=0.5), "only applies to a binary"),
        (lambda m: m.pop("files"), "files"),
        (lambda m: m["files"].update({"../evil": "0" * 64}), "missing"),
    ],
)
def test_invalid_manifests_are_rejected(
    tiny_model_dir: Path, tmp_path: Path, edit, message
) -> None:  # type: ignore[no-untyped-def]
    broken = _broken_copy(tiny_model_dir, tmp_path / "m")
    manifest = json.loads((broken / MANIFEST).read_text())
    edit(manifest)
    (broken / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=message):
        load_scorer(broken)


def test_manifest_that_is_not_json_is_rejected(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = _broken_copy(tiny_model_dir, tmp_path / "m")
    (broken / MANIFEST).write_bytes(b"\xff{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_scorer(broken)


def test_weights_load_without_pickle(tiny_model_dir: Path) -> None:
    with np.load(tiny_model_dir / "weights.npz", allow_pickle=False) as arrays:
        assert all(arrays[name].dtype != object for name in arrays.files)
