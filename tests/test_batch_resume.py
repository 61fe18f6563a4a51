"""Batch scoring: every format in and out, resuming after a crash or kill -9, the Ray engine."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model.scorer import Scorer, Scores
from model.tasks import LABELS, Task
from service.batch import BatchInputError, LocalEngine, score_file

ROWS = [
    {"id": f"r{i}", "text": text, "author": f"user {i}"}
    for i, text in enumerate(
        [
            "Where is my order? Two weeks now.",
            "love the new app, great job",
            'quoted "text", with commas\tand a tab',
            "multi\nline\ncomment",
            "émojis 🎉 and accents",
        ]
        * 8
    )
]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """The same rows in the format the path's extension names."""
    name = path.name.removesuffix(".gz")
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), path)
        return
    buffer = io.StringIO()
    if name.endswith(".jsonl"):
        buffer.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        writer = csv.DictWriter(
            buffer, fieldnames=list(rows[0]), delimiter="\t" if name.endswith(".tsv") else ","
        )
        writer.writeheader()
        writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def read_output(path: Path) -> list[dict[str, Any]]:
    """Output rows as flat dicts of text (as a spreadsheet would show them)."""
    name = path.name.removesuffix(".gz")
    if name.endswith(".parquet"):
        return [
            {k: "" if v is None else str(v) for k, v in row.items()}
            for row in pq.read_table(path).to_pylist()
        ]
    data = path.read_bytes()
    text = (gzip.decompress(data) if path.name.endswith(".gz") else data).decode("utf-8")
    if name.endswith(".jsonl"):
        flat = []
        for line in text.splitlines():
            row = json.loads(line)
            out = {k: str(v) for k, v in row.items() if k not in ("labels", "scores")}
            for task, label in row["labels"].items():
                out[f"label.{task}"] = label
                for name_, p in row["scores"][task].items():
                    out[f"score.{task}.{name_}"] = str(round(p, 6))
            flat.append(out)
        return flat
    delimiter = "\t" if name.endswith(".tsv") else ","
    return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))


FORMATS = ["csv", "tsv", "jsonl", "csv.gz", "tsv.gz", "jsonl.gz", "parquet"]


@pytest.mark.parametrize("in_format", FORMATS)
def test_every_input_format_gives_the_same_rows(
    tiny_scorer: Scorer, tmp_path: Path, in_format: str
) -> None:
    source = tmp_path / f"in.{in_format}"
    write_rows(source, ROWS)
    report = score_file(tiny_scorer, source, tmp_path / "out.jsonl")
    assert (report.rows_read, report.rows_scored, report.rows_failed) == (40, 40, 0)
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["id"], r["text"], r["author"]) for r in out] == [
        (r["id"], r["text"], r["author"]) for r in ROWS
    ]
    expected = tiny_scorer.predict([r["text"] for r in ROWS])
    assert [r["labels"]["sentiment"] for r in out] == [p.labels[Task.SENTIMENT] for p in expected]


@pytest.mark.parametrize("out_format", FORMATS)
def test_every_output_format_holds_the_same_rows(
    tiny_scorer: Scorer, tmp_path: Path, out_format: str
) -> None:
    source = tmp_path / "in.csv"
    write_rows(source, ROWS)
    score_file(tiny_scorer, source, tmp_path / "reference.jsonl")
    score_file(tiny_scorer, source, tmp_path / f"out.{out_format}", chunk_rows=7)
    reference = read_output(tmp_path / "reference.jsonl")
    got = read_output(tmp_path / f"out.{out_format}")
    assert len(got) == len(ROWS)
    for want, row in zip(reference, got, strict=True):
        assert {k: row[k] for k in want} == want  # every input column kept, same scores
    for task in Task:
        assert f"label.{task.value}" in got[0]
        assert {f"score.{task.value}.{label}" for label in LABELS[task]} <= set(got[0])


def test_bad_rows_of_every_kind_are_set_aside_never_dropped(
    tiny_scorer: Scorer, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(
        b"\xef\xbb\xbfid,text,extra\n"  # BOM
        b"1,fine,a\n"
        b"2,latin-1 caf\xe9,b\n"  # mixed encodings: one row is not UTF-8
        b"3,too few\n"  # ragged
        b"4,too,many,fields\n"
        b'5,"unterminated quote,c\n'
        b"6,fine again,d\n"
    )
    report = score_file(tiny_scorer, source, tmp_path / "out.csv")
    out = read_output(tmp_path / "out.csv")
    errors = [json.loads(line) for line in (tmp_path / "out.csv.errors.jsonl").open()]
    assert [r["id"] for r in out] == ["1"]
    assert [(e["row"], e["message"]) for e in errors][:3] == [
        (2, "invalid UTF-8"),
        (3, "1 fewer fields than the header has"),
        (4, "1 more fields than the header has"),
    ]
    # The open quote swallows the rest of the file into one field: one error row, not a crash.
    assert report.rows_read == len(out) + len(errors) == report.rows_scored + report.rows_failed
    assert list(out[0])[:3] == ["id", "text", "extra"], "the BOM is not part of the first name"


def test_empty_inputs(tiny_scorer: Scorer, tmp_path: Path) -> None:
    header_only = tmp_path / "in.csv"
    header_only.write_text("id,text\n", encoding="utf-8")
    report = score_file(tiny_scorer, header_only, tmp_path / "out.csv")
    assert report.rows_read == 0
    header = (tmp_path / "out.csv").read_text().splitlines()
    assert header[0].startswith("id,text,label.sentiment") and len(header) == 1
    empty = tmp_path / "in.jsonl"
    empty.write_bytes(b"")
    assert score_file(tiny_scorer, empty, tmp_path / "out.jsonl").rows_read == 0
    assert (tmp_path / "out.jsonl").read_bytes() == b""


class Crash(Exception):
    pass


class CrashingEngine(LocalEngine):
    """The local engine, dying (like Ctrl-C) after ``after`` chunks."""

    def __init__(self, scorer: Scorer, after: int):
        super().__init__(scorer)
        self.after = after

    def score(self, chunks: Iterator[list[str]]) -> Iterator[Scores]:
        for index, scores in enumerate(super().score(chunks)):
            if index == self.after:
                raise Crash
            yield scores


@pytest.mark.parametrize("out_format", ["csv", "jsonl.gz", "parquet"])
def test_a_rerun_resumes_after_the_last_completed_chunk(
    tiny_scorer: Scorer, tmp_path: Path, out_format: str
) -> None:
    source = tmp_path / "in.csv"
    write_rows(source, [*ROWS, {"id": "bad", "text": " ", "author": ""}, *ROWS])
    score_file(tiny_scorer, source, tmp_path / f"whole.{out_format}", chunk_rows=9)
    output = tmp_path / f"out.{out_format}"
    with pytest.raises(Crash):
        score_file(tiny_scorer, source, output, chunk_rows=9, engine=CrashingEngine(tiny_scorer, 4))
    assert not output.exists()
    report = score_file(tiny_scorer, source, output, chunk_rows=9)
    assert report.chunks_resumed == 4
    assert (report.rows_read, report.rows_failed) == (81, 1)
    assert read_output(output) == read_output(tmp_path / f"whole.{out_format}")
    errors = (tmp_path / f"out.{out_format}.errors.jsonl").read_text().splitlines()
    assert [json.loads(e)["id"] for e in errors] == ["bad"]
    assert not (tmp_path / f"out.{out_format}.parts").exists()


def test_an_unfinished_run_of_other_options_is_not_mixed_in(
    tiny_scorer: Scorer, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    write_rows(source, ROWS)
    output = tmp_path / "out.csv"
    with pytest.raises(Crash):
        score_file(tiny_scorer, source, output, chunk_rows=5, engine=CrashingEngine(tiny_scorer, 2))
    with pytest.raises(BatchInputError, match=r"unfinished run .* --restart"):
        score_file(tiny_scorer, source, output, chunk_rows=6)
    report = score_file(tiny_scorer, source, output, chunk_rows=6, restart=True)
    assert (report.chunks_resumed, report.rows_scored) == (0, len(ROWS))


def _cli(*args: str, model_dir: Path) -> list[str]:
    return [sys.executable, "-m", "commentdesk.cli", "score", *args, "--model-dir", str(model_dir)]


def test_kill_9_mid_run_then_rerun_gives_the_uninterrupted_output(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The issue's kill test, on the real CLI in a subprocess."""
    source = tmp_path / "in.csv"
    write_rows(
        source,
        [{"id": str(i), "text": f"comment {i}: where is order {i % 89}?"} for i in range(60_000)],
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    options = ["--chunk-rows", "500", "--no-progress"]
    whole = tmp_path / "whole.csv"
    subprocess.run(_cli(str(source), "-o", str(whole), *options, model_dir=tiny_model_dir),
                   check=True, env=env, capture_output=True)  # fmt: skip
    output = tmp_path / "out.csv"
    parts = tmp_path / "out.csv.parts"
    process = subprocess.Popen(
        _cli(str(source), "-o", str(output), *options, model_dir=tiny_model_dir),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while len(list(parts.glob("part-*.json"))) < 10:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = len(list(parts.glob("part-*.json")))
    assert not output.exists() and killed_at < 120
    rerun = subprocess.run(
        _cli(str(source), "-o", str(output), *options, model_dir=tiny_model_dir),
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "chunks kept from an earlier run" in rerun.stdout
    assert output.read_bytes() == whole.read_bytes()


def test_ray_engine_output_is_identical_to_the_local_engine(
    tiny_model_dir: Path, tiny_scorer: Scorer, tmp_path: Path
) -> None:
    if os.environ.get("CI") != "true":
        pytest.importorskip("ray", reason="the optional Ray extra is not installed")
    from service.batch_ray import RayEngine

    source = tmp_path / "in.jsonl"
    rows = [
        {"id": i, "text": f"comment {i} about order {i % 97}, can you help?"} for i in range(10_000)
    ]
    rows[1234]["text"] = ""
    write_rows(source, rows)
    local = score_file(tiny_scorer, source, tmp_path / "local.jsonl", chunk_rows=1000)
    import ray

    engine = RayEngine(tiny_model_dir, workers=2, window_rows=4000, batch_rows=500)
    try:
        ray_report = score_file(
            tiny_scorer, source, tmp_path / "ray.jsonl", chunk_rows=1000, engine=engine
        )
    finally:
        ray.shutdown()
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    assert (tmp_path / "ray.jsonl.errors.jsonl").read_bytes() == (
        tmp_path / "local.jsonl.errors.jsonl"
    ).read_bytes()
    assert (ray_report.rows_scored, ray_report.rows_failed) == (local.rows_scored, 1) == (9_999, 1)
