"""Which int8 form of the MiniLM model keeps PyTorch's labels, and how fast is each?

Builds each variant from the committed model (same fused fp32 graph as the export), then scores
real test tweets with the ONNX runtime and compares the labels with the PyTorch runtime of the
same weights: sentiment on 2,000 TweetEval sentiment test tweets, irony and emotion on their
whole test splits. Throughput: the ONNX scorer on the 2,000 sentiment tweets, best of three
rounds that alternate with the committed int8 model (the ratio is the figure to compare).
The chosen form is the one `commentdesk export-onnx` writes (``quantize_served``, calibrated on
the export's own sample of the model's training texts). Settings of the candidate forms
(smoothing strength, outlier channels, which layers stay 8-bit blocks) are chosen with
``--split val``; their statistics come from 1,000 training tweets, never from the compared split.

Usage: python bench/quantization.py [--model-dir artifacts/minilm] [--only "blocks of" chosen]
    [--split val]
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
from training.catalog import load_catalog
from training.onnx_export import fused_fp32_model
from training.quantization import (
    input_statistics,
    outlier_channels,
    per_column_int8,
    quantize_embeddings_per_row,
    quantize_linear_nbits,
    quantize_per_token,
    quantize_served,
    smooth_matmul_inputs,
)
from training.transformer import calibration_texts, task_plans

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
    parser.add_argument(
        "--split",
        default="test",
        choices=["test", "val"],
        help="Compare labels on this split (choose settings on val).",
    )
    args = parser.parse_args()
    data_dir = default_data_dir()
    if data_dir is None:
        sys.exit("no data directory (../shared/data)")

    def split(task: str, limit: int | None = None, name: str = args.split) -> list[str]:
        path = data_dir / "tweeteval" / task / f"{name}_text.txt"
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

    # Calibration of the candidate forms: training tweets of four tasks, never the compared split.
    calibration = [
        t for task in ("offensive", "hate", "irony", "emotion") for t in split(task, 250, "train")
    ]

    served_calibration = calibration_texts(load_catalog(data_dir), task_plans(manifest.config))

    def smoothed(alpha: float) -> Callable[[], onnx.ModelProto]:
        def build() -> onnx.ModelProto:
            model = smooth_matmul_inputs(fresh(), calibration, reference.tokenizer, alpha)
            quantized = dynamic(model, ["MatMul"], per_channel=True)
            quantize_embeddings_per_row(quantized)
            return quantized

        return build

    def per_token(
        alpha: float | None,
        asymmetric: bool = False,
        skip: tuple[str, ...] = (),
        correct: bool = False,
        gptq: bool = False,
        outlier_factor: float | None = None,
        most_outliers: int = 8,
    ) -> Callable[[], onnx.ModelProto]:
        def build() -> onnx.ModelProto:
            model = fresh()
            if alpha is not None:
                model = smooth_matmul_inputs(model, calibration, reference.tokenizer, alpha)
            means = grams = outliers = None
            if correct or gptq or outlier_factor is not None:
                stats = input_statistics(model, calibration, reference.tokenizer, gram=gptq)
                means = {name: mean for name, (mean, _, _) in stats.items()} if correct else None
                grams = {n: g for n, (_, _, g) in stats.items() if g is not None} if gptq else None
                if outlier_factor is not None:
                    outliers = {
                        name: outlier_channels(peak, outlier_factor, most_outliers)
                        for name, (_, peak, _) in stats.items()
                    }
            quantized = quantize_per_token(model, asymmetric, skip, means, grams, outliers)
            if skip:
                quantized = quantize_linear_nbits(quantized)
            quantize_embeddings_per_row(quantized)
            return quantized

        return build

    def weights_only() -> onnx.ModelProto:
        from onnx import numpy_helper

        model = fresh()
        matmuls = {n.input[1] for n in model.graph.node if n.op_type == "MatMul"}
        for init in model.graph.initializer:
            if init.name in matmuls:
                weight, scale = per_column_int8(numpy_helper.to_array(init))
                init.CopyFrom(numpy_helper.from_array(weight * scale, init.name))
        quantize_embeddings_per_row(model)
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
        ("per-token int8, SmoothQuant, fp32 outliers (chosen)", lambda: quantize_served(fresh(), served_calibration, reference.tokenizer)),
        ("8-bit MatMulNBits + per-row int8 embeddings (served to 0.6.0)", lambda: nbits(fresh(), "per-row")),
        ("the same, fp32 compute (accuracy level 1)", lambda: nbits(fresh(), "per-row", 1)),
        ("the same, blocks of 32", lambda: nbits(fresh(), "per-row", block_size=32)),
        ("the same, blocks of 128", lambda: nbits(fresh(), "per-row", block_size=128)),
        ("the same, blocks of 256", lambda: nbits(fresh(), "per-row", block_size=256)),
        ("mixed: dynamic int8 FFN output, NBits elsewhere", mixed(("output/dense",))),
        ("mixed: dynamic int8 both FFN layers, NBits elsewhere", mixed(("output/dense", "intermediate/dense"))),
        *[(f"smoothed dynamic int8, alpha {a}", smoothed(a)) for a in (0.5, 0.65, 0.8)],
        *[(f"per-token int8, smoothing {a}", per_token(a)) for a in (None, 0.5, 0.8)],
        *[(f"per-token int8, at most {n} outliers over {f}x median in fp32, smoothing {a}", per_token(a, outlier_factor=f, most_outliers=n)) for a, f, n in ((None, 6.0, 8), (None, 4.0, 8), (None, 3.0, 8), (0.5, 4.0, 8), (None, 2.5, 8), (None, 2.0, 8), (None, 3.0, 16), (None, 2.0, 16), (0.5, 3.0, 8), (0.5, 2.0, 16))],
        *[(f"per-token int8, bias-corrected, smoothing {a}", per_token(a, correct=True)) for a in (None, 0.3, 0.5)],
        *[(f"per-token int8, GPTQ weights, smoothing {a}", per_token(a, gptq=True)) for a in (None, 0.5)],
        ("fp32 compute, per-column int8 weights (simulated)", weights_only),
        *[(f"per-token int8 except {k[0]}", per_token(None, skip=k)) for k in (("self/",), ("attention/output",), ("intermediate",), tuple(f"layer.{i}/output/dense" for i in range(6)))],
        *[(f"per-token int8 except layer {k}", per_token(None, skip=(f"layer.{k}/",))) for k in range(6)],
        *[(f"per-token asymmetric int8, smoothing {a}", per_token(a, True)) for a in (None, 0.5)],
    ]  # fmt: skip
    if args.only is not None:
        variants = [v for v in variants if any(word in v[0] for word in args.only)]
    committed = OnnxScorer(args.model_dir, manifest)
    tweets = sets[Task.SENTIMENT]

    def rate(scorer: OnnxScorer) -> float:
        start = time.perf_counter()
        scorer.predict(tweets)
        return len(tweets) / (time.perf_counter() - start)

    print(f"{args.model_dir}: label agreement with PyTorch on the {args.split} split; ONNX")
    print("throughput on 2,000 tweets, best of 3 rounds alternating with the committed int8 model")
    print(
        f"{'form':<55} {'sentiment':>9} {'irony':>7} {'emotion':>8} {'comm./s':>8} "
        f"{'vs committed':>12} {'MB':>6}"
    )
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
            rounds = [(rate(committed), rate(scorer)) for _ in range(3)]
            best, baseline = max(r[1] for r in rounds), max(r[0] for r in rounds)
            print(
                f"{name:<55} {agreement[Task.SENTIMENT]:>9.2%} {agreement[Task.IRONY]:>7.2%} "
                f"{agreement[Task.EMOTION]:>8.2%} {best:>8.0f} {best / baseline:>11.2f}x "
                f"{path.stat().st_size / 1e6:>6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
