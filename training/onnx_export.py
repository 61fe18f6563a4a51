"""Export a trained multi-task network to int8 ONNX, so serving needs neither torch nor transformers.

The LoRA adapters are merged into the encoder's weights, the graph is exported once with dynamic
batch and sequence axes, ONNX Runtime's BERT fusions (attention, layer norm, GELU) are applied,
and the linear layers and embedding tables are quantised to int8 (``training.quantization``).
The tokenizer is the pinned encoder's own ``tokenizer.json`` (its hash is in the manifest).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from model.artifact import (
    OnnxSpec,
    library_versions,
    read_manifest,
    sha256_file,
    write_manifest,
)
from model.encoder import verified_encoder_dir
from model.onnx_runtime import EMBEDDING_OUTPUT, ONNX_FILE, TOKENIZER_FILE, logits_output
from model.scorer import TransformerScorer
from model.transformer import LoRALinear, MultiTaskNetwork
from training.quantization import SERVED_FORM, quantize_served

logger = logging.getLogger(__name__)
OPSET = 17


def merge_lora(network: MultiTaskNetwork) -> None:
    """Fold every adapter into its base layer: ``W + scale * B @ A``, then drop the adapter."""
    for module in list(network.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                with torch.no_grad():
                    child.base.weight += child.scale * (child.lora_b @ child.lora_a)
                setattr(module, name, child.base)


class _Exported(nn.Module):
    """The graph's outputs: logits per task, and the pooled, unit-length sentence embedding."""

    def __init__(self, network: MultiTaskNetwork):
        super().__init__()
        self.network = network

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        hidden = self.network.encoder(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = [self.network.heads[task.value](pooled) for task in self.network.tasks]
        # Written out rather than F.normalize: ReduceL2 changes form between opsets.
        unit = pooled * torch.rsqrt((pooled * pooled).sum(-1, keepdim=True).clamp(min=1e-12))
        return (*logits, unit)


def fused_fp32_model(scorer: TransformerScorer) -> onnx.ModelProto:
    """The network with merged adapters as an fp32 ONNX graph with ONNX Runtime's BERT fusions."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    network = scorer.network
    merge_lora(network)
    network.eval()
    # The eager attention graph is the one ONNX Runtime fuses into MultiHeadAttention.
    network.encoder.set_attn_implementation("eager")
    encoder_config = network.encoder.config
    outputs = [logits_output(task) for task in network.tasks] + [EMBEDDING_OUTPUT]
    example = scorer.tokenizer(["a short example", "and a second one"], padding=True)
    inputs = tuple(
        torch.tensor(example[name], dtype=torch.int64) for name in ("input_ids", "attention_mask")
    )
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.onnx"
        torch.onnx.export(
            _Exported(network),
            inputs,
            str(fp32),
            input_names=["input_ids", "attention_mask"],
            output_names=outputs,
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                **{name: {0: "batch"} for name in outputs},
            },
            opset_version=OPSET,
            dynamo=False,
        )
        options = FusionOptions("bert")
        # MultiHeadAttention keeps the Q/K/V projections as MatMuls, so they are quantised too;
        # the embedding lookups stay plain Gathers for the per-row int8 tables.
        options.use_multi_head_attention = True
        options.enable_embed_layer_norm = False
        # ONNX Runtime's CPU SkipLayerNormalization took 17 % of the int8 model's time, about
        # six times its Add + LayerNormalization (docs/experiments.md), so it stays unfused.
        options.enable_skip_layer_norm = False
        options.enable_bias_skip_layer_norm = False
        fused = optimize_model(
            str(fp32),
            model_type="bert",
            num_heads=encoder_config.num_attention_heads,
            hidden_size=encoder_config.hidden_size,
            optimization_options=options,
        )
    model: onnx.ModelProto = fused.model
    return model


def export_onnx(
    directory: Path,
    calibration: Sequence[str],
    encoder_dir: Path | None = None,
    version: str | None = None,
) -> Path:
    """Add ``model.int8.onnx`` to a transformer model directory and record it in the manifest.

    The linear layers get int8 activations with a scale per token row and int8 weights with a
    scale per column, their outlier channels eased and kept in fp32 as measured on the
    ``calibration`` texts (``training.quantization.quantize_served``); the embedding tables are
    stored as int8 with a scale per row (bench/quantization.py compares the forms). A new
    ``version`` marks a re-export of trained weights: the served scores move a little.
    """
    manifest = read_manifest(directory)
    if manifest.kind != "transformer-lora" or manifest.base_encoder is None:
        raise ValueError(f"{directory} holds a {manifest.kind} model; only transformers export")
    if not calibration:
        raise ValueError("the int8 export needs calibration texts")
    scorer = TransformerScorer(directory, manifest, encoder_dir)
    model = quantize_served(fused_fp32_model(scorer), list(calibration), scorer.tokenizer)
    onnx.save(model, directory / ONNX_FILE)
    tokenizer = verified_encoder_dir(encoder_dir, manifest.base_encoder.sha256) / TOKENIZER_FILE
    manifest.files[ONNX_FILE] = sha256_file(directory / ONNX_FILE)
    manifest.onnx = OnnxSpec(
        file=ONNX_FILE,
        tokenizer_sha256=sha256_file(tokenizer),
        quantization=SERVED_FORM,
        max_length=scorer.config.max_length,
    )
    manifest.library_versions.update(library_versions("onnxruntime", "onnx"))
    if version is not None:
        manifest.version = version
    write_manifest(directory, manifest)
    logger.info(
        "wrote %s (%.1f MB)", directory / ONNX_FILE, (directory / ONNX_FILE).stat().st_size / 1e6
    )
    return directory / ONNX_FILE
