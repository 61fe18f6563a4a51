"""Which int8 form of the MiniLM model keeps PyTorch's labels, and how fast is each?

Builds each variant from the committed model (same fused fp32 graph as the export), then scores
real test tweets with the ONNX runtime and compares the labels with the PyTorch runtime of the
same weights: sentiment on 2,000 TweetEval sentiment test tweets, irony and emotion on their
whole test splits. Throughput: the ONNX scorer on the 2,000 sentiment tweets, best of three
rounds that alternate with the committed int8 model (the ratio is the figure to compare).
The chosen form is the one `commentdesk export-onnx` writes. Settings of the candidate forms
(smoothing strength, which layers stay 8-bit blocks) are chosen with ``--split val``; the
smoothing statistics come from training tweets, never from the compared split.

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
from typing import Any

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


def weight_consumers(
    model: onnx.ModelProto, skip: tuple[str, ...] = ()
) -> dict[str, list[onnx.NodeProto]]:
    """The MatMuls with constant weights, grouped by their activation input (Q/K/V share one);
    those whose name holds one of ``skip`` are left out."""
    weights = {init.name for init in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        wanted = not any(kind in node.name for kind in skip)
        if node.op_type == "MatMul" and node.input[1] in weights and wanted:
            consumers.setdefault(node.input[0], []).append(node)
    return consumers


def input_statistics(
    model: onnx.ModelProto, texts: list[str], tokenizer: Any
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For the input of every constant-weight MatMul, over the real (unpadded) tokens of the
    calibration texts: each channel's mean and largest absolute value, and the Gram matrix."""
    import onnxruntime as ort
    from onnx import helper

    names = list(weight_consumers(model))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    sums: dict[str, np.ndarray] = {}
    peaks: dict[str, np.ndarray] = {}
    grams: dict[str, np.ndarray] = {}
    count = 0
    for start in range(0, len(texts), 32):
        encoded = tokenizer(
            texts[start : start + 32], padding=True, truncation=True, max_length=128
        )
        feed = {k: np.asarray(encoded[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}
        mask = feed["attention_mask"].astype(bool)
        count += int(mask.sum())
        for name, value in zip(names, session.run(names, feed), strict=True):
            rows = value[mask]
            sums[name] = sums.get(name, 0) + rows.sum(axis=0)
            peaks[name] = np.maximum(peaks.get(name, 0), np.abs(rows).max(axis=0))
            grams[name] = grams.get(name, 0) + rows.astype(np.float64).T @ rows
    return {name: (sums[name] / count, peaks[name], grams[name]) for name in names}


def smooth_matmul_inputs(
    model: onnx.ModelProto, texts: list[str], tokenizer: Any, alpha: float
) -> onnx.ModelProto:
    """SmoothQuant: move activation outliers into the weights before int8 activations.

    For each activation X feeding constant-weight MatMuls, ``X W = (X / s)(s W)`` with
    ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` per input channel, measured on calibration
    texts. Post-LN BERT cannot fold ``1 / s`` into a layer norm (its output is also the residual),
    so an explicit Mul is inserted on the branch.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    statistics = input_statistics(model, texts, tokenizer)
    for index, (name, nodes) in enumerate(weight_consumers(model).items()):
        weights = [numpy_helper.to_array(initializers[n.input[1]]) for n in nodes]
        weight_peak = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        peak = statistics[name][1]
        scale = (np.maximum(peak, 1e-5) ** alpha) / (np.maximum(weight_peak, 1e-5) ** (1 - alpha))
        scale = np.maximum(scale, 1e-5).astype(np.float32)
        for node, weight in zip(nodes, weights, strict=True):
            init = initializers[node.input[1]]
            init.CopyFrom(
                numpy_helper.from_array((weight * scale[:, None]).astype(np.float32), init.name)
            )
        smoothed = f"{name}_smoothed"
        graph.initializer.append(numpy_helper.from_array(1.0 / scale, f"{name}_inverse_scale"))
        mul = helper.make_node(
            "Mul", [name, f"{name}_inverse_scale"], [smoothed], name=f"Smooth_{index}"
        )
        position = min(list(graph.node).index(n) for n in nodes)
        graph.node.insert(position, mul)
        for node in nodes:
            node.input[0] = smoothed
    return model


def per_column_int8(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights with one scale per output column."""
    scale = (np.maximum(np.abs(weight).max(axis=0), 1e-12) / 127.0).astype(np.float32)
    return np.clip(np.round(weight / scale), -127, 127).astype(np.int8), scale


def gptq_int8(weight: np.ndarray, gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column int8 weights rounded by GPTQ: each input row in turn is rounded and its error
    is spread over the rows not yet rounded, weighted by the inputs' inverse Gram matrix, so the
    layer's output error (not the weights' error) is what is kept small."""
    _, scale = per_column_int8(weight)
    h = gram + 0.01 * np.mean(np.diag(gram)) * np.eye(len(gram))
    inverse = np.linalg.cholesky(np.linalg.inv(h)).T  # upper factor of H^-1
    remaining = weight.astype(np.float64).copy()
    quantized = np.zeros(weight.shape, dtype=np.int8)
    for k in range(len(remaining)):
        levels = np.clip(np.round(remaining[k] / scale), -127, 127)
        quantized[k] = levels
        error = (remaining[k] - levels * scale) / inverse[k, k]
        remaining[k + 1 :] -= np.outer(inverse[k, k + 1 :], error)
    return quantized, scale


def quantize_per_token(
    model: onnx.ModelProto,
    asymmetric: bool = False,
    skip: tuple[str, ...] = (),
    means: dict[str, np.ndarray] | None = None,
    grams: dict[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """int8 MatMulInteger with one activation scale per token row and one weight scale per column.

    Classic dynamic quantisation gives a whole batch's activation tensor one scale; here each
    token row gets its own: symmetric (uint8 around 128, for the u8 x s8 VNNI kernel), or
    asymmetric over the row's own [min, max] (the offset's product is added back exactly).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    consumers = weight_consumers(model, skip)
    graph.initializer.extend(
        numpy_helper.from_array(np.array(value, dtype=dtype), name)
        for name, value, dtype in [
            ("q_step", 1 / 255 if asymmetric else 1 / 127, np.float32),
            ("q_floor", 1e-8, np.float32),
            ("q_zero", 0 if asymmetric else 128, np.uint8),
            ("q_one", 1.0, np.float32),
        ]
    )
    if not asymmetric:  # symmetric int8 stored as uint8 around 128
        graph.initializer.append(numpy_helper.from_array(np.array(128.0, np.float32), "q_offset"))
    for index, (name, nodes) in enumerate(consumers.items()):
        p = f"pt{index}_"
        if asymmetric:
            quantize = [
                helper.make_node("ReduceMax", [name], [p + "max"], axes=[-1], keepdims=1),
                helper.make_node("ReduceMin", [name], [p + "min"], axes=[-1], keepdims=1),
                helper.make_node("Sub", [p + "max", p + "min"], [p + "range"]),
                helper.make_node("Max", [p + "range", "q_floor"], [p + "peak"]),
                helper.make_node("Mul", [p + "peak", "q_step"], [p + "scale"]),
                helper.make_node("Sub", [name, p + "min"], [p + "lifted"]),
                helper.make_node("Div", [p + "lifted", p + "scale"], [p + "ratio"]),
                helper.make_node("Round", [p + "ratio"], [p + "shift"]),
                helper.make_node("Cast", [p + "shift"], [p + "u8"], to=onnx.TensorProto.UINT8),
            ]
        else:
            quantize = [
                helper.make_node("Abs", [name], [p + "abs"]),
                helper.make_node("ReduceMax", [p + "abs"], [p + "max"], axes=[-1], keepdims=1),
                helper.make_node("Max", [p + "max", "q_floor"], [p + "peak"]),
                helper.make_node("Mul", [p + "peak", "q_step"], [p + "scale"]),
                helper.make_node("Div", [name, p + "scale"], [p + "ratio"]),
                helper.make_node("Round", [p + "ratio"], [p + "round"]),
                helper.make_node("Add", [p + "round", "q_offset"], [p + "shift"]),
                helper.make_node("Cast", [p + "shift"], [p + "u8"], to=onnx.TensorProto.UINT8),
            ]
        position = min(list(graph.node).index(n) for n in nodes)
        for offset, new_node in enumerate(quantize):
            graph.node.insert(position + offset, new_node)
        for j, node in enumerate(nodes):
            init = initializers[node.input[1]]
            weight = numpy_helper.to_array(init).astype(np.float32)
            wq, wscale = (
                per_column_int8(weight) if grams is None else gptq_int8(weight, grams[name])
            )
            graph.initializer.remove(init)
            graph.initializer.extend(
                [
                    numpy_helper.from_array(wq, f"{init.name}_s8"),
                    numpy_helper.from_array(wscale.astype(np.float32), f"{init.name}_wscale"),
                ]
            )
            q = f"{p}{j}_"
            output = node.output[0]
            at = list(graph.node).index(node)
            graph.node.remove(node)
            new = [
                helper.make_node(
                    "MatMulIntegerToFloat",
                    [p + "u8", f"{init.name}_s8", "q_one", f"{init.name}_wscale", "q_zero"],
                    [q + "float"],
                    domain="com.microsoft",
                ),
            ]
            if asymmetric:
                colsum = numpy_helper.from_array(weight.sum(axis=0), f"{init.name}_colsum")
                graph.initializer.append(colsum)
                new += [
                    helper.make_node("Mul", [q + "float", p + "scale"], [q + "scaled"]),
                    helper.make_node("Mul", [p + "min", f"{init.name}_colsum"], [q + "base"]),
                    helper.make_node("Add", [q + "scaled", q + "base"], [output]),
                ]
            else:
                new.append(helper.make_node("Mul", [q + "float", p + "scale"], [q + "out"]))
                if means is not None:
                    # Bias correction: the mean input times the weights' rounding error.
                    error = means[name] @ (weight - wq.astype(np.float32) * wscale)
                    graph.initializer.append(
                        numpy_helper.from_array(error.astype(np.float32), q + "corr")
                    )
                    new.append(helper.make_node("Add", [q + "out", q + "corr"], [output]))
                else:
                    new[-1].output[0] = output
            for offset, new_node in enumerate(new):
                graph.node.insert(at + offset, new_node)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


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

    # Calibration for smoothing: training tweets of every task, never the compared split.
    calibration = [
        t for task in ("offensive", "hate", "irony", "emotion") for t in split(task, 250, "train")
    ]

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
    ) -> Callable[[], onnx.ModelProto]:
        def build() -> onnx.ModelProto:
            model = fresh()
            if alpha is not None:
                model = smooth_matmul_inputs(model, calibration, reference.tokenizer, alpha)
            means = grams = None
            if correct or gptq:
                stats = input_statistics(model, calibration, reference.tokenizer)
                means = {name: mean for name, (mean, _, _) in stats.items()} if correct else None
                grams = {name: gram for name, (_, _, gram) in stats.items()} if gptq else None
            quantized = quantize_per_token(model, asymmetric, skip, means, grams)
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
        ("8-bit MatMulNBits + per-row int8 embeddings (chosen)", lambda: nbits(fresh(), "per-row")),
        ("the same, fp32 compute (accuracy level 1)", lambda: nbits(fresh(), "per-row", 1)),
        ("the same, blocks of 32", lambda: nbits(fresh(), "per-row", block_size=32)),
        ("the same, blocks of 128", lambda: nbits(fresh(), "per-row", block_size=128)),
        ("the same, blocks of 256", lambda: nbits(fresh(), "per-row", block_size=256)),
        ("mixed: dynamic int8 FFN output, NBits elsewhere", mixed(("output/dense",))),
        ("mixed: dynamic int8 both FFN layers, NBits elsewhere", mixed(("output/dense", "intermediate/dense"))),
        *[(f"smoothed dynamic int8, alpha {a}", smoothed(a)) for a in (0.5, 0.65, 0.8)],
        *[(f"per-token int8, smoothing {a}", per_token(a)) for a in (None, 0.5, 0.8)],
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
