"""Multi-task fine-tuning of the MiniLM network: task-sampled batches, warm-up and decay, early
stopping on the mean validation metric, resumable checkpoints, then temperature scaling and
thresholds fitted on validation data."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from model.artifact import (
    FORMAT_VERSION,
    BaseEncoder,
    Manifest,
    TaskSpec,
    library_versions,
    read_manifest,
    sha256_file,
    write_manifest,
)
from model.encoder import BASE_ENCODER_NAME, verified_encoder_dir
from model.scorer import softmax
from model.tasks import LABELS, Task, is_binary, parse_task
from model.transformer import (
    MultiTaskNetwork,
    NetworkConfig,
    build_network,
    config_dict,
    encode,
    load_tokenizer,
)
from training.calibration import fit_calibration
from training.catalog import PSEUDO_SOURCE, Catalog, load_catalog, source_hashes
from training.config import ConfigError, section_dataclass
from training.metrics import best_threshold, expected_calibration_error, official_metric
from training.onnx_export import export_onnx
from training.pseudo_labels import pseudo_labelled, with_teacher

logger = logging.getLogger(__name__)
ADAPTERS_FILE = "adapters.safetensors"


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 5e-4
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    batch_size: int = 32
    max_steps: int = 6000
    eval_every: int = 500
    patience: int = 4
    max_minutes: float = 100.0
    grad_clip: float = 1.0
    # Layer-wise learning-rate decay (Howard & Ruder 2018; Sun et al. 2019): encoder layer k of
    # L (1 = lowest) trains at lr * decay ** (L - k), the embeddings at lr * decay ** L.
    layer_lr_decay: float = 1.0
    sampling_temperature: float = 0.5
    eval_batch_size: int = 128


@dataclass(frozen=True)
class TaskPlan:
    task: Task
    train_sources: list[str]
    val_source: str
    class_weights: bool
    threshold: str | float


@dataclass
class TaskData:
    plan: TaskPlan
    train_texts: list[str]
    train_labels: np.ndarray
    val_texts: list[str] = field(default_factory=list)
    val_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def task_plans(config: dict[str, Any]) -> list[TaskPlan]:
    """Each task's data sources, validation set and threshold rule, from a config (or a
    trained model's manifest, which keeps its config)."""
    plans = []
    for name, section in config["tasks"].items():
        try:
            plans.append(
                TaskPlan(
                    parse_task(name),
                    list(section["train_sources"]),
                    str(section.get("val_source", "")),
                    bool(section.get("class_weights", False)),
                    section.get("threshold", "val"),
                )
            )
        except KeyError as exc:
            raise ConfigError(f"[tasks.{name}] lacks {exc}") from exc
    return plans


def task_data(catalog: Catalog, plans: list[TaskPlan]) -> list[TaskData]:
    data = []
    for plan in plans:
        names = list(LABELS[plan.task])
        train = catalog.select(plan.task, "train", plan.train_sources)
        if train.empty:
            raise ConfigError(f"{plan.task}: no training rows in {plan.train_sources}")
        item = TaskData(plan, list(train["text"]), train["label"].map(names.index).to_numpy())
        if plan.val_source:
            val = catalog.select(plan.task, "val", [plan.val_source])
            item.val_texts, item.val_labels = (
                list(val["text"]),
                val["label"].map(names.index).to_numpy(),
            )
        data.append(item)
    return data


def calibration_texts(catalog: Catalog, plans: list[TaskPlan], per_task: int = 250) -> list[str]:
    """A fixed sample of every task's training texts: what the int8 export measures its
    activations on (``training.onnx_export``)."""
    texts: list[str] = []
    for plan in plans:
        train = list(catalog.select(plan.task, "train", plan.train_sources)["text"])
        order = np.random.default_rng(0).permutation(len(train))[:per_task]
        texts += [train[i] for i in order]
    return texts


def class_weights(labels: np.ndarray, size: int) -> np.ndarray:
    """Inverse-frequency loss weights, for tasks whose classes are skewed."""
    counts = np.bincount(labels, minlength=size).astype(np.float64)
    weights: np.ndarray = counts.sum() / (size * np.maximum(counts, 1))
    return weights


def _loss_functions(data: list[TaskData]) -> dict[Task, nn.Module]:
    losses: dict[Task, nn.Module] = {}
    for item in data:
        weight = None
        if item.plan.class_weights:
            size = len(LABELS[item.plan.task])
            weight = torch.tensor(class_weights(item.train_labels, size), dtype=torch.float32)
        losses[item.plan.task] = nn.CrossEntropyLoss(weight=weight)
    return losses


@torch.inference_mode()
def pooled_vectors(
    network: MultiTaskNetwork,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int,
    layers: Sequence[int] = (),
) -> np.ndarray:
    """The vectors the heads read, batched by length so padding stays small; with ``layers``,
    the mean-pooled hidden states of those layers side by side instead (indices into the
    encoder's hidden states: 0 = the embeddings, -1 = the last layer)."""
    network.eval()
    width = network.encoder.config.hidden_size * max(1, len(layers))
    out = np.zeros((len(texts), width), dtype=np.float32)
    order = np.argsort([len(t) for t in texts])
    for start in range(0, len(texts), batch_size):
        index = order[start : start + batch_size]
        batch = encode(tokenizer, [texts[i] for i in index], network.config.max_length)
        if not layers:
            out[index] = network.pool(**batch).float().numpy()
            continue
        states = network.encoder(**batch, output_hidden_states=True).hidden_states
        mask = batch["attention_mask"].unsqueeze(-1).float()
        means = [(states[k] * mask).sum(1) / mask.sum(1).clamp(min=1.0) for k in layers]
        out[index] = torch.cat(means, dim=1).float().numpy()
    return out


@torch.inference_mode()
def predict_logits(
    network: MultiTaskNetwork, tokenizer: Any, texts: list[str], task: Task, batch_size: int
) -> np.ndarray:
    """Logits of one task."""
    vectors = torch.as_tensor(pooled_vectors(network, tokenizer, texts, batch_size))
    logits: np.ndarray = network.heads[task.value](vectors).float().numpy()
    return logits


def validation_scores(
    network: MultiTaskNetwork, tokenizer: Any, data: list[TaskData], optim: OptimConfig
) -> dict[Task, float]:
    scores = {}
    for item in data:
        if not item.val_texts:
            continue
        logits = predict_logits(
            network,
            tokenizer,
            item.val_texts,
            item.plan.task,
            optim.eval_batch_size,
        )
        names = np.array(LABELS[item.plan.task])
        scores[item.plan.task] = official_metric(
            item.plan.task, list(names[item.val_labels]), list(names[logits.argmax(axis=1)])
        )
    return scores


def parameter_groups(network: MultiTaskNetwork, optim: OptimConfig) -> list[dict[str, Any]]:
    """The optimiser's groups: the encoder's trainable weights by depth (one rate unless
    ``layer_lr_decay`` is below 1), then the heads (always the last group)."""
    layers = network.encoder.config.num_hidden_layers
    by_depth: dict[int, list[nn.Parameter]] = {}
    heads = []
    for name, parameter in network.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.startswith("heads."):
            heads.append(parameter)
            continue
        match = re.search(r"\.layer\.(\d+)\.", name)
        # Layers count from 1, the embeddings are depth 0; anything above the layers is depth L.
        depth = int(match[1]) + 1 if match else (0 if "embeddings" in name else layers)
        by_depth.setdefault(depth, []).append(parameter)
    return [
        {"params": params, "lr": optim.lr * optim.layer_lr_decay ** (layers - depth)}
        for depth, params in sorted(by_depth.items())
    ] + [{"params": heads, "lr": optim.head_lr}]


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def train_transformer(
    config: dict[str, Any], data_dir: Path, output_dir: Path, encoder_dir: Path | None = None
) -> Manifest:
    """Train, calibrate and write a model directory; resumes from ``output_dir/checkpoints``."""
    started = time.perf_counter()
    seed = int(config.get("seed", 0))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    network_config = section_dataclass(NetworkConfig, config, "network")
    optim = section_dataclass(OptimConfig, config, "optim")
    plans = task_plans(config)
    pseudo_tasks = [p.task for p in plans if PSEUDO_SOURCE in p.train_sources]
    catalog = load_catalog(data_dir, pseudo_labelled(config, pseudo_tasks, data_dir, encoder_dir))
    data = task_data(catalog, plans)
    expected_sha = config.get("base_encoder_sha256")
    encoder_dir = verified_encoder_dir(
        encoder_dir, **({"expected_sha256": expected_sha} if expected_sha else {})
    )
    tokenizer = load_tokenizer(encoder_dir)
    network = build_network(encoder_dir, [p.task for p in plans], network_config)
    losses = _loss_functions(data)

    groups = parameter_groups(network, optim)
    trainable = [p for group in groups for p in group["params"]]
    optimizer = torch.optim.AdamW(groups, weight_decay=optim.weight_decay)
    warmup = int(optim.warmup_ratio * optim.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _schedule(s, optim.max_steps, warmup)
    )
    sizes = np.array([len(item.train_texts) for item in data], dtype=np.float64)
    task_probabilities = (
        sizes**optim.sampling_temperature / (sizes**optim.sampling_temperature).sum()
    )
    rng = np.random.default_rng(seed)

    checkpoints = output_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"step": 0, "best": -1.0, "stale": 0, "history": []}
    last = checkpoints / "last.pt"
    if last.is_file():
        saved = torch.load(last, weights_only=True)
        network.load_trainable_state(saved["weights"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        rng.bit_generator.state = saved["rng"]
        logger.info("resumed at step %d (best mean val %.4f)", state["step"], state["best"])

    best_path = checkpoints / "best.safetensors"
    deadline = started + optim.max_minutes * 60
    progress = tqdm(total=optim.max_steps, initial=state["step"], desc="train", unit="step")
    network.train()
    running = 0.0
    while (
        state["step"] < optim.max_steps
        and state["stale"] < optim.patience
        and time.perf_counter() < deadline
    ):
        item = data[int(rng.choice(len(data), p=task_probabilities))]
        index = rng.integers(0, len(item.train_texts), size=optim.batch_size)
        batch = encode(tokenizer, [item.train_texts[i] for i in index], network_config.max_length)
        labels = torch.as_tensor(item.train_labels[index], dtype=torch.long)
        logits = network(**batch, tasks=[item.plan.task])[item.plan.task]
        loss = losses[item.plan.task](logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, optim.grad_clip)
        optimizer.step()
        scheduler.step()
        state["step"] += 1
        running = 0.98 * running + 0.02 * loss.item() if running else loss.item()
        progress.update(1)
        progress.set_postfix(loss=f"{running:.3f}", task=item.plan.task.value)
        if state["step"] % optim.eval_every == 0 or state["step"] == optim.max_steps:
            scores = validation_scores(network, tokenizer, data, optim)
            mean = float(np.mean(list(scores.values()))) if scores else 0.0
            state["history"].append(
                {"step": state["step"], "mean": mean, **{t.value: s for t, s in scores.items()}}
            )
            logger.info(
                "step %d: mean val %.4f %s",
                state["step"],
                mean,
                {t.value: round(s, 4) for t, s in scores.items()},
            )
            if mean > state["best"]:
                state["best"], state["stale"] = mean, 0
                save_file(network.trainable_state(), best_path)
            else:
                state["stale"] += 1
            network.train()
            torch.save(
                {"weights": network.trainable_state(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "state": state, "rng": rng.bit_generator.state},
                last,
            )  # fmt: skip
    progress.close()
    if best_path.is_file():
        from safetensors.torch import load_file

        network.load_trainable_state(load_file(best_path))
    network.eval()
    specs, calibration = calibrate_heads(network, tokenizer, data, optim)
    _write_artifact(
        config,
        network,
        output_dir,
        specs,
        calibration,
        state,
        data_dir,
        plans,
        encoder_dir,
        started,
    )
    export_onnx(output_dir, calibration_texts(catalog, plans), encoder_dir)
    return read_manifest(output_dir)


def calibrate_heads(
    network: MultiTaskNetwork, tokenizer: Any, data: list[TaskData], optim: OptimConfig
) -> tuple[dict[Task, TaskSpec], dict[str, dict[str, float]]]:
    """Per task: a temperature (and a per-label bias where it generalises, ``fit_calibration``)
    on validation logits, then the binary threshold on calibrated probabilities; the report
    keeps validation ECE before and after, and the validation metric."""
    specs, report = {}, {}
    for item in data:
        task = item.plan.task
        temperature, bias, threshold = 1.0, None, None
        if item.val_texts:
            logits = predict_logits(
                network,
                tokenizer,
                item.val_texts,
                task,
                optim.eval_batch_size,
            )
            temperature, bias = fit_calibration(logits, item.val_labels)
            before = expected_calibration_error(softmax(logits), item.val_labels)
            probabilities = softmax(logits, temperature, bias)
            after = expected_calibration_error(probabilities, item.val_labels)
            names = np.array(LABELS[task])
            report[task.value] = {
                "temperature": temperature,
                "val_ece_before": before,
                "val_ece_after": after,
                # as during training (argmax of the raw logits), from the same pass
                "val_metric": official_metric(
                    task, list(names[item.val_labels]), list(names[logits.argmax(axis=1)])
                ),
            }
            if is_binary(task) and item.plan.threshold == "val":
                threshold = best_threshold(item.val_labels == 1, probabilities[:, 1], task)
        if is_binary(task) and isinstance(item.plan.threshold, int | float):
            threshold = float(item.plan.threshold)
        specs[task] = TaskSpec(
            labels=list(LABELS[task]), threshold=threshold, temperature=temperature, bias=bias
        )
    return specs, report


def _write_artifact(
    config: dict[str, Any],
    network: MultiTaskNetwork,
    output_dir: Path,
    specs: dict[Task, TaskSpec],
    calibration: dict[str, dict[str, float]],
    state: dict[str, Any],
    data_dir: Path,
    plans: list[TaskPlan],
    encoder_dir: Path,
    started: float,
) -> Manifest:
    # fp16 halves the file; the difference to fp32 is far below what int8 serving changes.
    state16 = {name: tensor.half() for name, tensor in network.trainable_state().items()}
    save_file(state16, output_dir / ADAPTERS_FILE)
    sources = sorted({s for p in plans for s in (*p.train_sources, p.val_source) if s})

    best = max(state["history"], key=lambda h: h["mean"]) if state["history"] else {}
    training_data = source_hashes(data_dir, sources)
    if PSEUDO_SOURCE in training_data:
        training_data[PSEUDO_SOURCE] = with_teacher(training_data[PSEUDO_SOURCE], config)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        name=str(config["name"]),
        version=str(config["version"]),
        kind="transformer-lora",
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        tasks=specs,
        files={ADAPTERS_FILE: sha256_file(output_dir / ADAPTERS_FILE)},
        metrics={
            "val": {k: float(v) for k, v in best.items() if k not in ("step", "mean")},
            "training": {
                "seconds": round(time.perf_counter() - started, 1),
                "steps": float(state["step"]),
            },
            **{f"calibration.{task}": values for task, values in calibration.items()},
        },
        training_data=training_data,
        library_versions=library_versions("torch", "transformers", "numpy", "safetensors"),
        config=config,
        base_encoder=BaseEncoder(
            name=BASE_ENCODER_NAME, sha256=sha256_file(encoder_dir / "model.safetensors")
        ),
        network=config_dict(network.config),
    )
    write_manifest(output_dir, manifest)
    return manifest


def recalibrate_model(
    model_dir: Path,
    data_dir: Path,
    output_dir: Path,
    version: str,
    encoder_dir: Path | None = None,
) -> Manifest:
    """A new version of a transformer model with its calibration fitted again (as training
    fits it now) on each task's validation split; the weights and the ONNX export stay as they
    are, and a task without validation data keeps its temperature and threshold."""
    import shutil

    from model.scorer import TransformerScorer

    manifest = read_manifest(model_dir)
    if manifest.kind != "transformer-lora":
        raise ValueError(
            f"{model_dir} holds a {manifest.kind} model: only a transformer recalibrates"
        )
    scorer = TransformerScorer(model_dir, manifest, encoder_dir)
    plans = task_plans(manifest.config)
    data = task_data(load_catalog(data_dir), plans)
    specs, calibration = calibrate_heads(scorer.network, scorer.tokenizer, data, OptimConfig())
    for plan in plans:
        if not plan.val_source:
            specs[plan.task] = manifest.tasks[plan.task]
    if output_dir.resolve() != model_dir.resolve():
        shutil.copytree(model_dir, output_dir, dirs_exist_ok=True)
    updated = manifest.model_copy(
        update={
            "version": version,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "tasks": specs,
            "metrics": {
                **manifest.metrics,
                **{f"calibration.{task}": values for task, values in calibration.items()},
            },
            "config": {**manifest.config, "recalibrated": f"{manifest.name} {manifest.version}"},
        }
    )
    write_manifest(output_dir, updated)
    return read_manifest(output_dir)
