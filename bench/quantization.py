"""Which int8 form of the MiniLM model keeps PyTorch's labels, and how fast is each?

Builds each variant from the committed model (same fused fp32 graph as the export), then scores
real test tweets with the ONNX runtime and compares the labels with the PyTorch runtime of the
same weights: sentiment on 2,000 TweetEval sentiment test tweets, irony and emotion on their
whole test splits. Throughput: the ONNX scorer on the 2,000 sentiment tweets (best of three).
The chosen form is the one `commentdesk export-onnx` writes.

Usage: python bench/quantization.py [--model-dir artifacts/minilm] [--only "blocks of" chosen]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from commentdesk.settings import PROJECT_ROOT, default_data_dir
from model.artifact import read_manifest
from model.onnx_runtime import OnnxScorer
from model.scorer import TransformerScorer
from model.tasks import Task
from training.onnx_export import (
    fused_fp32_model,
    quantize_embeddings_per_row,
    quantize_linear_nbits,
)

FLOAT_DEFAULT = {"DefaultTensorType": onnx.TensorProto.FLOAT}


def dynamic(
    model: onnx.ModelProto, ops: list[str], per_channel: bool, only: list[str] | None = None
) -> onnx.ModelProto:
    """onnxruntime's classic dynamic quantisation (per-call activation scale per tensor)."""
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, source)
        matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul"]
        quantize_dynamic(
            source,
            target,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=ops,
            nodes_to_exclude=[n for n in matmuls if only is not None and n not in only],
            extra_options={**FLOAT_DEFAULT, "MatMulConstBOnly": True},
        )
        return onnx.load(target)


def nbits(
    model: onnx.ModelProto, embeddings: str, accuracy_level: int = 4, block_size: int = 64
) -> onnx.ModelProto:
    quantized = quantize_linear_nbits(model, block_size, accuracy_level)
    if embeddings == "per-row":
        quantize_embeddings_per_row(quantized)
    elif embeddings == "per-tensor":
        quantized = dynamic(quantized, ["Gather"], per_channel=False)
    return quantized


def ffn(model: onnx.ModelProto, which: tuple[str, ...]) -> list[str]:
    names = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    return [n for n in names if any(w in n for w in which) and "attention" not in n]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, default=PROJECT_ROOT / "artifacts" / "minilm")
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="Build only the forms whose name holds one of these.",
    )
    args = parser.parse_args()
    data_dir = default_data_dir()
    if data_dir is None:
        sys.exit("no data directory (../shared/data)")

    def split(task: str, limit: int | None = None) -> list[str]:
        path = data_dir / "tweeteval" / task / "test_text.txt"
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()][:limit]

    sets = {
        Task.SENTIMENT: split("sentiment", 2000),
        Task.IRONY: split("irony"),
        Task.EMOTION: split("emotion"),
    }
    manifest = read_manifest(args.model_dir)
    reference = TransformerScorer(args.model_dir, manifest)
    expected = {task: [p.labels[task] for p in reference.predict(t)] for task, t in sets.items()}
    fused_once = fused_fp32_model(TransformerScorer(args.model_dir, manifest))

    def fresh() -> onnx.ModelProto:
        """A copy: the quantisers change the model they are given."""
        model = onnx.ModelProto()
        model.CopyFrom(fused_once)
        return model

    def mixed(which: tuple[str, ...]) -> Callable[[], onnx.ModelProto]:
        def build() -> onnx.ModelProto:
            part = dynamic(fresh(), ["MatMul"], per_channel=True, only=ffn(fused_once, which))
            quantized = quantize_linear_nbits(part)
            quantize_embeddings_per_row(quantized)
            return quantized

        return build

    variants: list[tuple[str, Callable[[], onnx.ModelProto]]] = [
        ("fp32, fused (control)", fresh),
        ("dynamic int8, per-tensor, MatMul + Gather", lambda: dynamic(fresh(), ["MatMul", "Gather"], False)),
        ("dynamic int8, per-channel weights", lambda: dynamic(fresh(), ["MatMul", "Gather"], True)),
        ("8-bit MatMulNBits + per-tensor int8 embeddings", lambda: nbits(fresh(), "per-tensor")),
        ("8-bit MatMulNBits + fp32 embeddings", lambda: nbits(fresh(), "fp32")),
        ("8-bit MatMulNBits + per-row int8 embeddings (chosen)", lambda: nbits(fresh(), "per-row")),
        ("the same, fp32 compute (accuracy level 1)", lambda: nbits(fresh(), "per-row", 1)),
        ("the same, blocks of 32", lambda: nbits(fresh(), "per-row", block_size=32)),
        ("the same, blocks of 128", lambda: nbits(fresh(), "per-row", block_size=128)),
        ("the same, blocks of 256", lambda: nbits(fresh(), "per-row", block_size=256)),
        ("mixed: dynamic int8 FFN output, NBits elsewhere", mixed(("output/dense",))),
        ("mixed: dynamic int8 both FFN layers, NBits elsewhere", mixed(("output/dense", "intermediate/dense"))),
    ]  # fmt: skip
    if args.only is not None:
        variants = [v for v in variants if any(word in v[0] for word in args.only)]
    print(f"{args.model_dir}: label agreement with PyTorch, ONNX throughput on 2,000 tweets")
    print(f"{'form':<55} {'sentiment':>9} {'irony':>7} {'emotion':>8} {'comm./s':>8} {'MB':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in variants:
            path = Path(tmp) / "model.int8.onnx"
            onnx.save(build(), path)
            spec = manifest.onnx.model_copy(update={"file": path.name})  # type: ignore[union-attr]
            scorer = OnnxScorer(Path(tmp), manifest.model_copy(update={"onnx": spec}))
            agreement = {
                task: np.mean([p.labels[task] == e for p, e in zip(scorer.predict(t), expected[task], strict=True)])
                for task, t in sets.items()
            }  # fmt: skip
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                scorer.predict(sets[Task.SENTIMENT])
                best = min(best, time.perf_counter() - start)
            rate = len(sets[Task.SENTIMENT]) / best
            print(
                f"{name:<55} {agreement[Task.SENTIMENT]:>9.2%} {agreement[Task.IRONY]:>7.2%} "
                f"{agreement[Task.EMOTION]:>8.2%} {rate:>8.0f} {path.stat().st_size / 1e6:>6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
