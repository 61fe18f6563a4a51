"""int8 forms of the network's ONNX graph: the served one and those `bench/quantization.py`
compares with it.

The served form (``quantize_served``) gives each token row its own int8 scale and each weight
column its own, for ONNX Runtime's VNNI ``MatMulIntegerToFloat``; the few input channels whose
calibration peaks stand far above the rest (BERT's outlier dimensions) are first eased by
SmoothQuant and then multiplied in fp32 beside the int8 product, so they do not set the row's
scale (docs/experiments.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

SMOOTHING_SUFFIX = "_inverse_scale"


def quantize_embeddings_per_row(model: onnx.ModelProto) -> None:
    """Store the embedding tables (words, positions, token types) as int8, one scale per row.

    One scale for the whole table (what ``quantize_dynamic`` does for Gather) is set by its
    largest value and moved 0.5-1 % of labels here; per-row scales keep each token's precision.
    The lookup becomes Gather(int8) -> Cast -> Mul(Gather(scales)).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    tables = [
        node
        for node in graph.node
        if node.op_type == "Gather"
        and node.input[0] in initializers
        and len(initializers[node.input[0]].dims) == 2
    ]
    for node in tables:
        name, ids, output = node.input[0], node.input[1], node.output[0]
        table = numpy_helper.to_array(initializers[name]).astype(np.float32)
        scales = np.maximum(np.abs(table).max(axis=1, keepdims=True), 1e-12) / 127.0
        quantized = np.clip(np.round(table / scales), -127, 127).astype(np.int8)
        graph.initializer.remove(initializers[name])
        graph.initializer.extend(
            [
                numpy_helper.from_array(quantized, f"{name}_int8"),
                numpy_helper.from_array(scales.astype(np.float32), f"{name}_scale"),
            ]
        )
        index = list(graph.node).index(node)
        graph.node.remove(node)
        replacement = [
            helper.make_node("Gather", [f"{name}_int8", ids], [f"{output}_int8"], axis=0),
            helper.make_node(
                "Cast", [f"{output}_int8"], [f"{output}_float"], to=onnx.TensorProto.FLOAT
            ),
            helper.make_node("Gather", [f"{name}_scale", ids], [f"{output}_scale"], axis=0),
            helper.make_node("Mul", [f"{output}_float", f"{output}_scale"], [output]),
        ]
        for offset, new_node in enumerate(replacement):
            graph.node.insert(index + offset, new_node)


def quantize_linear_nbits(
    model: onnx.ModelProto, block_size: int = 64, accuracy_level: int = 4
) -> onnx.ModelProto:
    """Every constant-weight MatMul as 8-bit ``MatMulNBits``."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(
        block_size=block_size, is_symmetric=True, accuracy_level=accuracy_level, bits=8
    )
    quantizer = MatMulNBitsQuantizer(model, algo_config=config)
    quantizer.process()
    quantized: onnx.ModelProto = quantizer.model.model
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
    model: onnx.ModelProto, texts: list[str], tokenizer: Any, gram: bool = False
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """For the input of every constant-weight MatMul, over the real (unpadded) tokens of the
    calibration texts: each channel's mean and largest absolute value, and with ``gram`` the
    Gram matrix (for GPTQ; the costliest part)."""
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
            if gram:
                grams[name] = grams.get(name, 0) + rows.astype(np.float64).T @ rows
    return {name: (sums[name] / count, peaks[name], grams.get(name)) for name in names}


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
        inverse = f"{name}{SMOOTHING_SUFFIX}"
        graph.initializer.append(numpy_helper.from_array(1.0 / scale, inverse))
        mul = helper.make_node("Mul", [name, inverse], [smoothed], name=f"Smooth_{index}")
        position = min(list(graph.node).index(n) for n in nodes)
        graph.node.insert(position, mul)
        for node in nodes:
            node.input[0] = smoothed
    return model


# Weights use 7 of int8's bits. Without VNNI (AVX2 only) ONNX Runtime's u8 x s8 kernel adds
# pairs of products in int16, which saturates past 32,767: 2 x 255 x 127 does, 2 x 255 x 63 does
# not (ONNX Runtime's own advice for such machines, its `reduce_range`). On an AVX2 machine the
# full range moved the committed model's TweetEval offensive test F1 by half a point.
WEIGHT_LEVELS = 63


def per_column_int8(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights (7 bits, see WEIGHT_LEVELS) with one scale per output column."""
    scale = (np.maximum(np.abs(weight).max(axis=0), 1e-12) / WEIGHT_LEVELS).astype(np.float32)
    return np.clip(np.round(weight / scale), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8), scale


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
        levels = np.clip(np.round(remaining[k] / scale), -WEIGHT_LEVELS, WEIGHT_LEVELS)
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
    outliers: dict[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """int8 MatMulInteger with one activation scale per token row and one weight scale per column.

    Classic dynamic quantisation gives a whole batch's activation tensor one scale; here each
    token row gets its own: symmetric (uint8 around 128, for the u8 x s8 VNNI kernel), or
    asymmetric over the row's own [min, max] (the offset's product is added back exactly).
    ``outliers`` names, per activation, input channels kept out of the int8 product and
    multiplied in fp32 instead (LLM.int8()'s decomposition), so they do not set the row's scale.
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
    if not asymmetric:
        graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "q_flat"))
    for index, (name, nodes) in enumerate(consumers.items()):
        p = f"pt{index}_"
        channels = outliers.get(name) if outliers is not None else None
        source, split = name, channels is not None and len(channels) > 0
        hidden = numpy_helper.to_array(initializers[nodes[0].input[1]]).shape[0]
        raw, rescale = name, np.ones(hidden, np.float32)
        split_nodes: list[onnx.NodeProto] = []
        if split:
            keep = np.ones(hidden, np.float32)
            keep[channels] = 0.0
            graph.initializer.append(
                numpy_helper.from_array(np.asarray(channels, np.int64), p + "channels")
            )
            smoothing = next(
                (n for n in graph.node if n.output[0] == name and n.op_type == "Mul"), None
            )
            if smoothing is not None and smoothing.input[1].endswith(SMOOTHING_SUFFIX):
                # The outliers are zeroed by the smoothing Mul itself and taken from its input.
                vector = initializers[smoothing.input[1]]
                raw, rescale = smoothing.input[0], numpy_helper.to_array(vector)
                vector.CopyFrom(numpy_helper.from_array(rescale * keep, vector.name))
            else:
                graph.initializer.append(numpy_helper.from_array(keep, p + "keep"))
                source = p + "inliers"
                split_nodes.append(helper.make_node("Mul", [name, p + "keep"], [source]))
            split_nodes.append(
                helper.make_node("Gather", [raw, p + "channels"], [p + "outliers"], axis=-1)
            )
        if asymmetric:
            quantize = [
                helper.make_node("ReduceMax", [source], [p + "max"], axes=[-1], keepdims=1),
                helper.make_node("ReduceMin", [source], [p + "min"], axes=[-1], keepdims=1),
                helper.make_node("Sub", [p + "max", p + "min"], [p + "range"]),
                helper.make_node("Max", [p + "range", "q_floor"], [p + "peak"]),
                helper.make_node("Mul", [p + "peak", "q_step"], [p + "scale"]),
                helper.make_node("Sub", [source, p + "min"], [p + "lifted"]),
                helper.make_node("Div", [p + "lifted", p + "scale"], [p + "ratio"]),
                helper.make_node("Round", [p + "ratio"], [p + "shift"]),
                helper.make_node("Cast", [p + "shift"], [p + "u8"], to=onnx.TensorProto.UINT8),
            ]
        else:
            quantize = [
                helper.make_node("Abs", [source], [p + "abs"]),
                helper.make_node("ReduceMax", [p + "abs"], [p + "max"], axes=[-1], keepdims=1),
                helper.make_node("Max", [p + "max", "q_floor"], [p + "peak"]),
                helper.make_node("Mul", [p + "peak", "q_step"], [p + "scale"]),
                # One QuantizeLinear over the rows (one scale each): the same rounding as
                # Div, Round, Add 128 and Cast, in one pass instead of four.
                helper.make_node("Reshape", [p + "scale", "q_flat"], [p + "row_scale"]),
                helper.make_node("Reshape", [source, f"q_rows_{hidden}"], [p + "rows"]),
                helper.make_node("Shape", [p + "row_scale"], [p + "count"]),
                helper.make_node("Expand", ["q_zero", p + "count"], [p + "zero"]),
                helper.make_node(
                    "QuantizeLinear",
                    [p + "rows", p + "row_scale", p + "zero"],
                    [p + "u8_rows"],
                    axis=0,
                ),
                helper.make_node("Shape", [source], [p + "shape"]),
                helper.make_node("Reshape", [p + "u8_rows", p + "shape"], [p + "u8"]),
            ]
            if f"q_rows_{hidden}" not in initializers:
                initializers[f"q_rows_{hidden}"] = numpy_helper.from_array(
                    np.array([-1, hidden], np.int64), f"q_rows_{hidden}"
                )
                graph.initializer.append(initializers[f"q_rows_{hidden}"])
        quantize = split_nodes + quantize
        position = min(list(graph.node).index(n) for n in nodes)
        for offset, new_node in enumerate(quantize):
            graph.node.insert(position + offset, new_node)
        for j, node in enumerate(nodes):
            init = initializers[node.input[1]]
            weight = numpy_helper.to_array(init).astype(np.float32)
            if split:
                rows = weight[channels] * rescale[channels, None]
                graph.initializer.append(numpy_helper.from_array(rows, f"{init.name}_outlier_rows"))
                weight = weight * keep[:, None]
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
            if split:
                int8_output = new[-1].output[0] = q + "int8_part"
                new += [
                    helper.make_node(
                        "MatMul", [p + "outliers", f"{init.name}_outlier_rows"], [q + "fp32_part"]
                    ),
                    helper.make_node("Add", [int8_output, q + "fp32_part"], [output]),
                ]
            for offset, new_node in enumerate(new):
                graph.node.insert(at + offset, new_node)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def outlier_channels(peak: np.ndarray, factor: float, most: int = 8) -> np.ndarray:
    """The input channels whose calibration peak exceeds ``factor`` times the median channel's,
    largest first, at most ``most`` of them."""
    order = np.argsort(-peak)[:most]
    return np.sort(order[peak[order] > factor * np.median(peak)])


SMOOTHING = 0.5
OUTLIER_FACTOR = 2.0
MOST_OUTLIERS = 16
SERVED_FORM = (
    f"int8 MatMulIntegerToFloat, activations per token, 7-bit weights per column; SmoothQuant "
    f"(alpha {SMOOTHING}), up to {MOST_OUTLIERS} outlier channels over {OUTLIER_FACTOR}x the "
    "median peak in fp32; MultiHeadAttention; int8 embedding rows"
)


def quantize_served(
    model: onnx.ModelProto, calibration: list[str], tokenizer: Any
) -> onnx.ModelProto:
    """The served int8 form of a fused fp32 graph, its settings chosen on the `val` splits by
    bench/quantization.py (docs/experiments.md)."""
    smoothed = smooth_matmul_inputs(model, calibration, tokenizer, SMOOTHING)
    peaks = {
        name: peak
        for name, (_, peak, _) in input_statistics(smoothed, calibration, tokenizer).items()
    }
    outliers = {
        name: outlier_channels(peak, OUTLIER_FACTOR, MOST_OUTLIERS) for name, peak in peaks.items()
    }
    quantized = quantize_per_token(smoothed, outliers=outliers)
    quantize_embeddings_per_row(quantized)
    return quantized
