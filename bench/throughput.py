"""All-task throughput on real tweets: the naive peer, the PyTorch scorer, the int8 ONNX scorer.

(a) naive peer: a `transformers` text-classification pipeline on the same base encoder, one
    pipeline per task (six), one comment at a time -- how teams run per-task models today;
(b) commentdesk's PyTorch scorer (one encoder pass for all tasks, length-sorted batches);
(c) commentdesk's int8 ONNX scorer (length buckets, padded per bucket).
Also measures this machine's fp32 and int8 matrix-multiply rates with ONNX Runtime's own kernels
(the best GEMMs available to the model) and prints the FLOP limit for this model at the measured
mean token count, and how close the int8 scorer gets to it.

Every figure is measured in ``--rounds`` interleaved rounds (a share of the naive peer's comments,
one PyTorch pass, one int8 pass, then the best of ten runs of each GEMM): the scorers' rates are
the total work over the total time, the GEMM rates the mean of the rounds' peaks. Each ratio thus
compares measurements taken under the same conditions: on a shared 2-core VM the scorer's speed
moves by several per cent over tens of seconds (by up to a quarter while its workers shared one
session, bench/steadiness.py). Each int8 pass also reads how much of the machine the host stole
meanwhile (bench/steal.py) and prints its rate on the cores it really had, beside the plain one.

Usage: python bench/throughput.py [--model-dir artifacts/minilm] [--comments 2000] [--naive 150]
                                  [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.steal import Window
from commentdesk.settings import PROJECT_ROOT, default_data_dir
from model.encoder import base_encoder_dir
from model.scorer import load_scorer
from model.tasks import LABELS, Task
from model.text import normalize


def tweets(limit: int) -> list[str]:
    data_dir = default_data_dir()
    if data_dir is None:
        sys.exit("no data directory (../shared/data)")
    path = data_dir / "tweeteval" / "sentiment" / "test_text.txt"
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()][:limit]


def seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


class Rate:
    """Work done, seconds spent and core-seconds stolen by the host, summed over the rounds."""

    def __init__(self) -> None:
        self.work = 0.0
        self.window = Window()

    def time(self, run: Callable[[], object], work: float) -> Window:
        """Time one ``run`` of ``work`` units; return its own window."""
        window = Window().start()
        run()
        window.stop()
        self.work += work
        self.window.wall += window.wall
        self.window.stolen += window.stolen
        return window

    @property
    def per_second(self) -> float:
        return self.work / self.window.wall

    @property
    def steal_free(self) -> float:
        return self.window.steal_free(self.work)


def naive_peer() -> Callable[[list[str]], None]:
    """Scores comments through six single-task pipelines, one comment at a time."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    torch.manual_seed(0)
    encoder = base_encoder_dir()
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    pipes = [
        pipeline(
            "text-classification",
            model=AutoModelForSequenceClassification.from_pretrained(
                encoder, num_labels=len(LABELS[task])
            ),
            tokenizer=tokenizer,
            device=-1,
        )
        for task in Task
    ]

    def run(texts: list[str]) -> None:
        for text in texts:
            for pipe in pipes:
                pipe(text, truncation=True, max_length=64)

    run(["warm-up"])
    return run


def matmuls(
    m: int = 2048, k: int = 1536, n: int = 1536
) -> tuple[Callable[[], object], Callable[[], object], float]:
    """One fp32 and one int8 GEMM with ONNX Runtime's CPU kernels, and their operation count."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def session(int8: bool) -> ort.InferenceSession:
        kind = TensorProto.UINT8 if int8 else TensorProto.FLOAT
        weight_kind = TensorProto.INT8 if int8 else TensorProto.FLOAT
        op = "MatMulInteger" if int8 else "MatMul"
        graph = helper.make_graph(
            [helper.make_node(op, ["a", "b"], ["c"])],
            "gemm",
            [
                helper.make_tensor_value_info("a", kind, [m, k]),
                helper.make_tensor_value_info("b", weight_kind, [k, n]),
            ],
            [
                helper.make_tensor_value_info(
                    "c", TensorProto.INT32 if int8 else TensorProto.FLOAT, [m, n]
                )
            ],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(0)
    fp32 = session(False)
    a32, b32 = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    int8 = session(True)
    a8 = rng.integers(0, 255, (m, k), dtype=np.uint8)
    b8 = rng.integers(-127, 127, (k, n), dtype=np.int8)
    fp32.run(None, {"a": a32, "b": b32})
    int8.run(None, {"a": a8, "b": b8})
    return (
        lambda: fp32.run(None, {"a": a32, "b": b32}),
        lambda: int8.run(None, {"a": a8, "b": b8}),
        2.0 * m * k * n,
    )


def flops_per_comment(tokens: float, hidden: int = 384, ffn: int = 1536, layers: int = 6) -> float:
    """Multiply-adds x 2 of one MiniLM pass: the linear layers plus attention scores/values."""
    linear = 4 * hidden * hidden + 2 * hidden * ffn
    return layers * (2 * linear * tokens + 4 * tokens * tokens * hidden)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, default=PROJECT_ROOT / "artifacts" / "minilm")
    parser.add_argument("--comments", type=int, default=2000)
    parser.add_argument("--naive", type=int, default=150, help="Comments for the slow peer.")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    texts = tweets(args.comments)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {len(texts)} TweetEval test tweets"
    )

    onnx_scorer = load_scorer(args.model_dir, runtime="onnx")
    torch_scorer = load_scorer(args.model_dir, runtime="torch")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(base_encoder_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(64)
    tokenizer.no_padding()
    mean_tokens = float(
        np.mean([len(e.ids) for e in tokenizer.encode_batch([normalize(t) for t in texts])])
    )

    naive_run = naive_peer()
    fp32_gemm, int8_gemm, ops = matmuls()
    flops = flops_per_comment(mean_tokens)
    rates = {name: Rate() for name in ("naive", "pytorch", "int8")}
    # A GEMM's peak is its best run: per round, so that it is the peak of that round's machine.
    gemm_peaks: dict[str, list[float]] = {"fp32": [], "int8": []}
    onnx_scorer.predict(texts[:200])  # warm-up
    torch_scorer.predict(texts[:200])
    print(
        "round   int8 scorer /s   stolen   steal-free /s   int8 GEMM GOP/s"
        "   share of the FLOP limit (steal-free)"
    )
    for round_ in range(args.rounds):
        share = texts[round_ * args.naive // args.rounds : (round_ + 1) * args.naive // args.rounds]
        rates["naive"].time(partial(naive_run, share), len(share))
        rates["pytorch"].time(lambda: torch_scorer.predict(texts), len(texts))
        window = rates["int8"].time(lambda: onnx_scorer.predict(texts), len(texts))
        for kind, gemm in (("fp32", fp32_gemm), ("int8", int8_gemm)):
            gemm_peaks[kind].append(max(ops / seconds(gemm) for _ in range(10)))
        scorer_rate, steal_free = len(texts) / window.wall, window.steal_free(len(texts))
        peak = gemm_peaks["int8"][-1]
        print(
            f"{round_ + 1:5d} {scorer_rate:16.1f} {window.steal_share:8.0%} {steal_free:15.1f} "
            f"{peak / 1e9:17.1f} {scorer_rate * flops / peak:17.1%} ({steal_free * flops / peak:.1%})"
        )
    naive, pytorch, int8 = (r.per_second for r in rates.values())
    fp32_rate, int8_rate = (float(np.mean(peaks)) for peaks in gemm_peaks.values())
    limit = int8_rate / flops

    print(
        f"\nall six tasks, comments/s over the {args.rounds} rounds "
        f"(mean {mean_tokens:.1f} tokens per comment)"
    )
    print(
        f"  (a) naive: six transformers pipelines, one comment at a time  {naive:8.1f}   ({naive * 6:.0f} task-predictions/s)"
    )
    print(
        f"  (b) commentdesk PyTorch scorer (one pass, sorted batches)     {pytorch:8.1f}   {pytorch / naive:6.1f}x naive"
    )
    print(
        f"  (c) commentdesk int8 ONNX scorer (length buckets)             {int8:8.1f}   {int8 / naive:6.1f}x naive, {int8 / pytorch:.1f}x PyTorch"
    )
    print("\nmachine: ONNX Runtime GEMM 2048x1536x1536")
    print(f"  fp32 MatMul         {fp32_rate / 1e9:8.1f} GFLOP/s")
    print(
        f"  int8 MatMulInteger  {int8_rate / 1e9:8.1f} GOP/s   ({int8_rate / fp32_rate:.1f}x fp32)"
    )
    print(f"model: {flops / 1e6:.0f} MFLOP per comment at {mean_tokens:.1f} tokens")
    print(f"  int8 FLOP limit     {limit:8.1f} comments/s")
    print(f"  int8 scorer reaches {int8 / limit:8.1%} of it")
    int8_free, stolen = rates["int8"].steal_free, rates["int8"].window.steal_share
    print(
        f"  on the cores it had   {int8_free / limit:6.1%} ({stolen:.0%} of the machine's time "
        f"was stolen by the host during the int8 passes: {int8_free:.1f} comments/s steal-free)"
    )


if __name__ == "__main__":
    main()
