"""A model's own calibration: temperature, per-label bias where it generalises, and
`commentdesk recalibrate`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from model.artifact import TaskSpec, read_manifest, sha256_file
from model.onnx_runtime import OnnxScorer
from model.scorer import TransformerScorer, calibrated, softmax
from model.tasks import Task
from training.calibration import fit_calibration, fit_temperature
from training.transformer import recalibrate_model


def _sampled(logits: np.ndarray, seed: int) -> np.ndarray:
    """Gold labels drawn from softmax(logits): labels for which these logits are calibrated."""
    rng = np.random.default_rng(seed)
    probabilities = softmax(logits)
    return np.array([rng.choice(len(p), p=p) for p in probabilities])


def test_a_head_that_favours_one_label_gets_a_bias_and_a_calibrated_one_does_not() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, size=(3000, 3))
    gold = _sampled(logits, 1)
    temperature, bias = fit_calibration(logits, gold)
    assert bias is None  # nothing to correct: the held-out check refuses the extra parameters
    assert temperature == pytest.approx(1.0, abs=0.1)
    assert temperature == fit_temperature(logits, gold)

    skewed = logits * 2.0 + np.array([1.5, 0.0, -1.5])  # overconfident and favouring label 0
    temperature, bias = fit_calibration(skewed, gold)
    assert bias is not None and len(bias) == 3
    assert sum(bias) == pytest.approx(0.0, abs=1e-9)  # centred: softmax ignores a shift
    assert temperature == pytest.approx(2.0, rel=0.1)
    assert bias[0] < -0.4 and bias[2] > 0.4
    nll = {}
    for name, (t, b) in {"temperature": (fit_temperature(skewed, gold), None),
                         "with bias": (temperature, bias)}.items():  # fmt: skip
        p = softmax(skewed, t, b)
        nll[name] = -np.log(p[np.arange(len(gold)), gold]).mean()
    assert nll["with bias"] < nll["temperature"] - 0.02


def test_the_bias_is_part_of_the_spec_and_must_fit_the_labels() -> None:
    spec = TaskSpec(labels=["a", "b", "c"], temperature=2.0, bias=[0.5, 0.0, -0.5])
    logits = np.array([[1.0, 2.0, 3.0]])
    expected = np.exp(logits / 2.0 + spec.bias)
    np.testing.assert_allclose(calibrated(logits, spec), expected / expected.sum(), atol=1e-12)
    with pytest.raises(ValidationError, match="bias has 2 values for 3 labels"):
        TaskSpec(labels=["a", "b", "c"], bias=[0.1, -0.1])


def test_both_runtimes_apply_the_bias(
    tiny_transformer_dir: Path, tiny_encoder_dir: Path, tmp_path: Path
) -> None:
    texts = ["where is my order?", "this is great", "worst service ever"]
    model = tmp_path / "biased"
    shutil.copytree(tiny_transformer_dir, model)
    manifest = read_manifest(model)
    without = manifest.model_copy(
        update={
            "tasks": {t: s.model_copy(update={"bias": None}) for t, s in manifest.tasks.items()}
        }
    )
    bias = [1.0, 0.0, -1.0]
    spec = without.tasks[Task.SENTIMENT].model_copy(update={"bias": bias})
    biased = without.model_copy(update={"tasks": {**without.tasks, Task.SENTIMENT: spec}})
    for scorer_of in (
        lambda m: TransformerScorer(model, m, tiny_encoder_dir),
        lambda m: OnnxScorer(model, m),
    ):
        plain = scorer_of(without).score(texts).probabilities[Task.SENTIMENT]
        shifted = scorer_of(biased).score(texts).probabilities[Task.SENTIMENT]
        expected = plain * np.exp(bias)
        np.testing.assert_allclose(
            shifted, expected / expected.sum(axis=1, keepdims=True), atol=1e-5
        )


def test_recalibrate_writes_a_new_version_with_the_same_weights(
    tiny_transformer_dir: Path,
    tiny_model_dir: Path,
    tiny_encoder_dir: Path,
    synthetic_data_dir: Path,
    tmp_path: Path,
) -> None:
    base = read_manifest(tiny_transformer_dir)
    # An older model: temperatures only.
    old = tmp_path / "old"
    shutil.copytree(tiny_transformer_dir, old)
    plain = base.model_copy(
        update={"tasks": {t: s.model_copy(update={"bias": None, "temperature": 1.0})
                          for t, s in base.tasks.items()}}
    )  # fmt: skip
    (old / "manifest.json").write_text(plain.model_dump_json(indent=2))
    output = tmp_path / "recalibrated"
    manifest = recalibrate_model(old, synthetic_data_dir, output, "9.9.9", tiny_encoder_dir)
    assert (
        manifest.version == "9.9.9"
        and manifest.config["recalibrated"] == f"{base.name} {base.version}"
    )
    for name in ("adapters.safetensors", "model.int8.onnx"):
        assert sha256_file(output / name) == sha256_file(old / name)
    # The question task has no validation split here: its spec stays as it was.
    assert manifest.tasks[Task.QUESTION] == plain.tasks[Task.QUESTION]
    # Every task with validation data is fitted again as training fits it (training saw the
    # fp32 weights, recalibration the saved fp16 ones: equal within that rounding).
    for task, spec in manifest.tasks.items():
        if task is not Task.QUESTION:
            assert spec.temperature == pytest.approx(base.tasks[task].temperature, rel=0.02), task
    assert OnnxScorer(output, manifest).score(["fine"]).labels
    with pytest.raises(ValueError, match="only a transformer recalibrates"):
        recalibrate_model(tiny_model_dir, synthetic_data_dir, tmp_path / "x", "1", tiny_encoder_dir)
    assert not (tmp_path / "x").exists()


def test_recalibrate_command_refuses_what_it_cannot_recalibrate(
    tiny_model_dir: Path, synthetic_data_dir: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from commentdesk.cli import app as cli

    data = ["--data-dir", str(synthetic_data_dir)]
    runner = CliRunner()
    baseline = runner.invoke(cli, ["recalibrate", str(tiny_model_dir), "--version", "2", *data])
    assert baseline.exit_code == 2 and "only a transformer recalibrates" in baseline.output
    missing = runner.invoke(cli, ["recalibrate", str(tmp_path / "nope"), "--version", "2", *data])
    assert missing.exit_code == 2 and "nope" in missing.output
