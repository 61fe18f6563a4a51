"""The multi-task network and its trainer, on a tiny randomly initialised encoder (seconds)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from commentdesk.settings import PROJECT_ROOT
from model.artifact import read_manifest, sha256_file
from model.encoder import BASE_ENCODER_SHA256, verified_encoder_dir
from model.errors import ArtifactError
from model.scorer import Runtime, TransformerScorer, load_scorer, softmax
from model.tasks import LABELS, Task
from model.transformer import (
    LoRALinear,
    NetworkConfig,
    build_network,
    encode,
    load_tokenizer,
)
from training.calibration import fit_temperature
from training.config import load_config
from training.transformer import OptimConfig, parameter_groups, train_transformer


def test_one_pass_gives_every_task(tiny_encoder_dir: Path) -> None:
    network = build_network(tiny_encoder_dir, list(Task), NetworkConfig(lora_rank=2))
    batch = encode(load_tokenizer(tiny_encoder_dir), ["hello", "can you help me? 😀"], 16)
    logits = network(**batch)
    assert {task: tuple(t.shape) for task, t in logits.items()} == {
        task: (2, len(LABELS[task])) for task in Task
    }


def test_only_adapters_and_heads_train(tiny_encoder_dir: Path) -> None:
    network = build_network(tiny_encoder_dir, list(Task), NetworkConfig(lora_rank=2))
    trainable = [name for name, p in network.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name or name.startswith("heads.") for name in trainable)
    assert (
        sum(isinstance(m, LoRALinear) for m in network.modules()) == 2 * 6
    )  # 2 layers x 6 linears
    # A fresh adapter changes nothing: lora_b starts at zero.
    lora = next(m for m in network.modules() if isinstance(m, LoRALinear))
    x = torch.randn(3, lora.base.in_features)
    assert torch.allclose(lora(x), lora.base(x))


def test_layer_wise_learning_rates_fall_with_depth(tiny_encoder_dir: Path) -> None:
    network = build_network(tiny_encoder_dir, list(Task), NetworkConfig(lora_rank=0))
    groups = parameter_groups(network, OptimConfig(lr=1.0, head_lr=5.0, layer_lr_decay=0.5))
    # Embeddings, layer 1, layer 2 (the top: full rate), heads.
    assert [group["lr"] for group in groups] == [0.25, 0.5, 1.0, 5.0]
    grouped = [p for group in groups for p in group["params"]]
    trainable = [p for p in network.parameters() if p.requires_grad]
    assert len(grouped) == len(trainable) and {id(p) for p in grouped} == {id(p) for p in trainable}
    word_embeddings = network.encoder.embeddings.word_embeddings.weight
    assert any(p is word_embeddings for p in groups[0]["params"])
    # One rate by default: the split by depth changes nothing.
    assert {group["lr"] for group in parameter_groups(network, OptimConfig(lr=1.0))[:-1]} == {1.0}


def test_full_fine_tuning_trains_and_serves_every_encoder_weight(
    tiny_encoder_dir: Path, synthetic_data_dir: Path, tmp_path: Path
) -> None:
    """``lora_rank = 0``: no adapters, every encoder weight trains, is saved and is served."""
    network = build_network(tiny_encoder_dir, list(Task), NetworkConfig(lora_rank=0))
    assert not any(isinstance(m, LoRALinear) for m in network.modules())
    assert all(p.requires_grad for p in network.parameters())
    overrides = [
        "optim.max_steps=20", "optim.eval_every=20", "optim.batch_size=8", "optim.lr=0.01",
        "optim.layer_lr_decay=0.8", "network.lora_rank=0", "network.max_length=16",
    ]  # fmt: skip
    config = load_config(PROJECT_ROOT / "configs" / "multitask.toml", overrides)
    config["base_encoder_sha256"] = sha256_file(tiny_encoder_dir / "model.safetensors")
    train_transformer(config, synthetic_data_dir, tmp_path, encoder_dir=tiny_encoder_dir)
    saved = load_file(tmp_path / "adapters.safetensors")
    base = build_network(tiny_encoder_dir, list(Task), NetworkConfig(lora_rank=0))
    assert set(saved) == {name for name, _ in base.named_parameters()}
    query = "encoder.encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(saved[query].float(), base.state_dict()[query])  # it trained
    texts = ["I love this!", "can you help with my order?"]
    torch_scorer = load_scorer(tmp_path, encoder_dir=tiny_encoder_dir, runtime="torch")
    onnx_scorer = load_scorer(tmp_path, encoder_dir=tiny_encoder_dir, runtime="onnx")
    for ours, exported in zip(torch_scorer.predict(texts), onnx_scorer.predict(texts), strict=True):
        assert ours.scores[Task.SENTIMENT] == pytest.approx(
            exported.scores[Task.SENTIMENT], abs=0.1
        )


def test_encoder_hash_is_enforced(tiny_encoder_dir: Path) -> None:
    with pytest.raises(ArtifactError, match="refusing to load"):
        verified_encoder_dir(tiny_encoder_dir)
    assert verified_encoder_dir(
        tiny_encoder_dir, sha256_file(tiny_encoder_dir / "model.safetensors")
    )


def test_temperature_scaling_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 3)) * 2
    gold = np.array([rng.choice(3, p=p) for p in softmax(true_logits)])
    fitted = fit_temperature(true_logits * 3.0, gold)  # over-confident by a factor of 3
    assert fitted == pytest.approx(3.0, rel=0.1)


def test_training_writes_a_calibrated_artifact(
    tiny_transformer_dir: Path, tiny_encoder_dir: Path
) -> None:
    manifest = read_manifest(tiny_transformer_dir)
    assert manifest.kind == "transformer-lora"
    assert manifest.base_encoder is not None and manifest.network is not None
    assert set(manifest.files) == {"adapters.safetensors", "model.int8.onnx"}
    assert (tiny_transformer_dir / "adapters.safetensors").stat().st_size < 1_000_000
    assert manifest.tasks[Task.OFFENSIVE].threshold is not None
    assert manifest.tasks[Task.QUESTION].threshold == 0.5
    assert manifest.tasks[Task.SENTIMENT].temperature > 0
    assert "val_ece_after" in manifest.metrics["calibration.sentiment"]
    assert manifest.metrics["training"]["steps"] == 40
    scorer = load_scorer(tiny_transformer_dir, encoder_dir=tiny_encoder_dir, runtime="torch")
    assert isinstance(scorer, TransformerScorer)
    texts = ["I love this!", "you idiot", "can you help with my order?", "😀 שלום"]
    first, again = scorer.predict(texts), scorer.predict(list(reversed(texts)))
    assert first == list(reversed(again))  # batching and order do not change scores
    for prediction in first:
        for task in Task:
            assert sum(prediction.scores[task].values()) == pytest.approx(1.0, abs=1e-6)


def test_training_resumes_from_its_checkpoint(
    tiny_transformer_dir: Path, tiny_encoder_dir: Path, synthetic_data_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "resume"
    shutil.copytree(tiny_transformer_dir, copy)
    config = read_manifest(copy).config
    before = read_manifest(copy).metrics["training"]["steps"]
    config["optim"]["max_steps"] = 60
    manifest = train_transformer(config, synthetic_data_dir, copy, encoder_dir=tiny_encoder_dir)
    assert manifest.metrics["training"]["steps"] == before + 20


def test_adapters_for_another_encoder_are_rejected(tiny_transformer_dir: Path) -> None:
    """PyTorch needs the base encoder the adapters were trained on (the ONNX export carries
    its whole network and only needs the pinned tokenizer)."""
    assert read_manifest(tiny_transformer_dir).base_encoder.sha256 != BASE_ENCODER_SHA256  # type: ignore[union-attr]
    with pytest.raises(ArtifactError, match="another base encoder"):
        load_scorer(tiny_transformer_dir, runtime="torch")


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_committed_minilm_model_scores_on_the_pinned_encoder(runtime: Runtime) -> None:
    """The real packaged encoder and the committed model: loads, verifies, scores sensibly."""
    scorer = load_scorer(PROJECT_ROOT / "artifacts" / "minilm", runtime=runtime)
    abusive, thanks, question = scorer.predict(
        [
            "you are a fucking idiot",
            "thank you so much, you are the best!",
            "@brand where is my refund? can you check?",
        ]
    )
    assert abusive.labels[Task.OFFENSIVE] == "offensive"
    assert thanks.labels[Task.SENTIMENT] == "positive"
    assert question.labels[Task.QUESTION] == "question"
