"""The int8 ONNX runtime: built by training, same answers as PyTorch, no torch when serving."""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from commentdesk.settings import PROJECT_ROOT
from model.artifact import read_manifest
from model.errors import ArtifactError
from model.onnx_runtime import OnnxScorer, buckets
from model.scorer import TransformerScorer, load_scorer
from model.tasks import Task
from tests.conftest import run_python
from training.onnx_export import export_onnx
from training.quantization import (
    SERVED_FORM,
    WEIGHT_LEVELS,
    outlier_channels,
    quantize_per_token,
)

TEXTS = [
    "where is my order??",
    "love this brand so much",
    "you are all idiots",
    "ok",
    "Can I change the delivery address after paying? It says processing " * 3,
    "meh. the app crashed again @support http://x.example/y",
    "😀😀😀",
]


def test_buckets_cover_every_row_once_within_limits() -> None:
    lengths = [5, 60, 7, 5, 30, 61, 2, 9]
    groups = buckets(lengths, max_rows=3, max_tokens=100, overhead_tokens=20)
    flat = sorted(int(i) for group in groups for i in group)
    assert flat == list(range(len(lengths)))
    for group in groups:
        assert len(group) <= 3
        assert len(group) == 1 or len(group) * max(lengths[i] for i in group) <= 100
    # Sorted by length: no group mixes the shortest and the longest rows.
    assert not any({6, 5} <= {int(i) for i in group} for group in groups)


def _cost(lengths: list[int], groups: list[list[int]], overhead: float) -> float:
    return sum(len(g) * max(lengths[i] for i in g) + overhead for g in groups)


def _every_cut(items: list[int], max_rows: int) -> list[list[list[int]]]:
    """Every way to cut ``items`` into consecutive groups of at most ``max_rows``."""
    if not items:
        return [[]]
    return [
        [items[:size], *rest]
        for size in range(1, min(max_rows, len(items)) + 1)
        for rest in _every_cut(items[size:], max_rows)
    ]


@pytest.mark.parametrize("seed", range(20))
def test_buckets_find_the_cheapest_cut(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = [int(x) for x in rng.integers(3, 64, size=int(rng.integers(1, 11)))]
    overhead = float(rng.choice([0.0, 8.0, 16.0, 1000.0]))
    groups = [[int(i) for i in g] for g in buckets(lengths, 4, 10_000, overhead)]
    order = [int(i) for i in np.argsort(lengths, kind="stable")]
    cheapest = min(_cost(lengths, cut, overhead) for cut in _every_cut(order, 4))
    assert _cost(lengths, groups, overhead) == cheapest
    # No overhead: nothing is worth padding, so equal lengths aside every row runs alone.
    if overhead == 0.0:
        assert all(len({lengths[i] for i in g}) == 1 for g in groups)
    # A huge overhead: as few calls as the row limit allows.
    if overhead == 1000.0:  # more than all the padding there can be
        assert len(groups) == -(-len(lengths) // 4)


def test_training_builds_the_onnx_export(tiny_transformer_dir: Path) -> None:
    manifest = read_manifest(tiny_transformer_dir)
    assert manifest.onnx is not None
    assert manifest.onnx.file in manifest.files
    assert (tiny_transformer_dir / manifest.onnx.file).stat().st_size > 0


def test_onnx_agrees_with_pytorch(tiny_transformer_dir: Path, tiny_encoder_dir: Path) -> None:
    onnx = load_scorer(tiny_transformer_dir, encoder_dir=tiny_encoder_dir, runtime="onnx")
    torch_scorer = load_scorer(tiny_transformer_dir, encoder_dir=tiny_encoder_dir, runtime="torch")
    assert isinstance(onnx, OnnxScorer) and isinstance(torch_scorer, TransformerScorer)
    a, b = onnx.predict(TEXTS), torch_scorer.predict(TEXTS)
    for x, y in zip(a, b, strict=True):
        for task in Task:
            assert x.scores[task] == pytest.approx(y.scores[task], abs=0.02)


def test_bucketing_does_not_change_a_comment_s_scores(
    tiny_transformer_dir: Path, tiny_encoder_dir: Path
) -> None:
    scorer = load_scorer(tiny_transformer_dir, encoder_dir=tiny_encoder_dir)
    together = scorer.predict(TEXTS)
    alone = [scorer.predict([text])[0] for text in TEXTS]
    for x, y in zip(together, alone, strict=True):
        for task in Task:
            assert x.scores[task] == pytest.approx(y.scores[task], abs=1e-4)
    assert scorer.predict([]) == []


def test_each_worker_runs_its_own_session(
    tiny_transformer_dir: Path, tiny_encoder_dir: Path
) -> None:
    """Two runs on one session contend for its allocator (docs/benchmarks.md): every worker
    thread keeps to one session of its own, also when several callers score at once."""
    scorer = OnnxScorer(
        tiny_transformer_dir, read_manifest(tiny_transformer_dir), tiny_encoder_dir, threads=2
    )
    distinct = {id(session) for session in scorer.sessions}
    assert len(scorer.sessions) == len(distinct) == 2, "two sessions, not one twice"
    users: dict[int, set[int]] = {}
    lock = threading.Lock()

    class Recording:
        def __init__(self, session: Any) -> None:
            self.session = session

        def run(self, *args: Any) -> Any:
            with lock:
                users.setdefault(id(self), set()).add(threading.get_ident())
            time.sleep(0.002)  # long enough for the other worker to pick up groups too
            return self.session.run(*args)

    scorer.sessions = [Recording(session) for session in scorer.sessions]
    scorer._start_workers()  # new threads, bound to the recording sessions
    with ThreadPoolExecutor(3) as callers:
        list(callers.map(scorer.predict, [TEXTS * 4] * 6))
    assert len(users) == 2, "both workers ran"
    threads = [thread for used_by in users.values() for thread in used_by]
    assert all(len(used_by) == 1 for used_by in users.values())
    assert len(set(threads)) == 2, "no session was shared by two threads"


def test_embeddings_are_unit_length(tiny_transformer_dir: Path, tiny_encoder_dir: Path) -> None:
    scorer = load_scorer(tiny_transformer_dir, encoder_dir=tiny_encoder_dir)
    assert isinstance(scorer, OnnxScorer)
    vectors = scorer.embed(TEXTS)
    assert vectors.shape[0] == len(TEXTS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)


def test_a_different_tokenizer_is_refused(
    tiny_transformer_dir: Path, tiny_encoder_dir: Path, tmp_path: Path
) -> None:
    other = tmp_path / "encoder"
    shutil.copytree(tiny_encoder_dir, other)
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    tokenizer["model"]["vocab"]["zebra-crossing"] = len(tokenizer["model"]["vocab"])
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ArtifactError, match="not the tokenizer the model was built on"):
        load_scorer(tiny_transformer_dir, encoder_dir=other)


def test_a_corrupted_onnx_file_is_refused(tiny_transformer_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_transformer_dir, broken)
    (broken / "model.int8.onnx").write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="does not match the sha256"):
        load_scorer(broken)


def test_serving_the_onnx_model_imports_neither_torch_nor_transformers(
    tiny_transformer_dir: Path, tmp_path: Path
) -> None:
    """A fresh interpreter starts the app, scores over HTTP and suggests replies; scikit-learn
    and SciPy (the TF-IDF model's, ~150 MB resident) stay out too."""
    script = f"""
import sys
from fastapi.testclient import TestClient
from commentdesk.settings import Settings
from service.app import create_app
from service.auth import Role, create_key
app = create_app(Settings(model_dir={str(tiny_transformer_dir)!r}, data_dir=None,
                          state_dir={str(tmp_path)!r}))
with TestClient(app) as client, app.state.sessions() as session:
    from service.replies import load_defaults
    load_defaults(session)
    key = create_key(session, "s", Role.SCORER)[1]
    auth = {{"Authorization": f"Bearer {{key}}"}}
    scored = client.post("/v1/score", json={{"text": "where is my refund?", "suggest_replies": 2}},
                         headers=auth)
    assert scored.status_code == 200, scored.text
    assert len(scored.json()["results"][0]["suggestions"]) == 2
print(sorted(m for m in ("torch", "transformers", "sklearn", "scipy") if m in sys.modules))
"""
    # The tiny transformer's tokenizer is the pinned one, so the default encoder package serves.
    assert run_python(script)[-1] == "[]"


def test_the_export_is_the_served_form_and_needs_calibration(
    tiny_transformer_dir: Path, tiny_encoder_dir: Path, tmp_path: Path
) -> None:
    manifest = read_manifest(tiny_transformer_dir)
    assert manifest.onnx is not None and manifest.onnx.quantization == SERVED_FORM
    copy = tmp_path / "copy"
    shutil.copytree(tiny_transformer_dir, copy)
    with pytest.raises(ValueError, match="calibration texts"):
        export_onnx(copy, [], tiny_encoder_dir)


@pytest.mark.parametrize("committed", [None, "minilm", "minilm-brand"])
def test_int8_weights_cannot_saturate_the_avx2_kernel(
    tiny_transformer_dir: Path, committed: str | None
) -> None:
    """Without VNNI, ONNX Runtime's u8 x s8 kernel adds pairs of products in int16: a uint8
    activation (up to 255) times two weights must stay within 32,767, or scores change by
    machine. Checked on a fresh export and on the committed models."""
    directory = PROJECT_ROOT / "artifacts" / committed if committed else tiny_transformer_dir
    model = onnx.load(str(directory / "model.int8.onnx"))
    weights = {init.name: init for init in model.graph.initializer}
    products = [n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat"]
    assert products
    peaks = [int(np.abs(numpy_helper.to_array(weights[n.input[1]])).max()) for n in products]
    assert max(peaks) == WEIGHT_LEVELS and 2 * 255 * WEIGHT_LEVELS <= 32_767


def test_outlier_channels_are_those_far_above_the_median() -> None:
    peak = np.ones(64)
    peak[[3, 40, 41]] = [9.0, 2.5, 1.9]
    assert outlier_channels(peak, 2.0).tolist() == [3, 40]
    assert outlier_channels(peak, 2.0, most=1).tolist() == [3]
    assert outlier_channels(np.ones(64), 2.0).tolist() == []


def _one_matmul(weight: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="dense")],
        "dense",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, weight.shape[0]])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, weight.shape[1]])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_outlier_channels_in_fp32_keep_the_int8_product_close() -> None:
    """One input channel 50x the others sets every row's int8 scale, unless it is multiplied
    in fp32 beside the int8 product; rows are quantised alone, so batching changes nothing."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 32)).astype(np.float32)
    x = rng.standard_normal((16, 64)).astype(np.float32)
    x[:, 7] *= 50.0
    exact = x @ weight

    def run(outliers: dict[str, np.ndarray] | None, rows: np.ndarray) -> np.ndarray:
        model = quantize_per_token(_one_matmul(weight), outliers=outliers)
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        result: np.ndarray = session.run(["y"], {"x": rows})[0]
        return result

    def error(result: np.ndarray) -> float:
        return float(np.abs(result - exact).max() / np.abs(exact).max())

    plain, split = run(None, x), run({"x": np.array([7])}, x)
    assert error(split) < 0.01
    assert error(split) < error(plain) / 5
    assert np.allclose(run({"x": np.array([7])}, x[:1]), split[:1], atol=1e-5)
