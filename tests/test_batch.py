import csv
import gzip
import json
from pathlib import Path

import pytest

from model.scorer import Scorer
from model.tasks import LABELS, Task
from service.batch import BatchInputError, score_file


def _read_jsonl(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_jsonl_rows_keep_fields_and_gain_api_fields(tiny_scorer: Scorer, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    rows = [
        {"id": "a", "text": "love it", "author": "x"},
        {"id": "b", "text": "can you help?", "n": 3},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = score_file(tiny_scorer, source, tmp_path / "out.jsonl")
    assert (report.rows_read, report.rows_scored, report.errors) == (2, 2, [])
    out = _read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in out] == ["a", "b"]
    assert out[0]["author"] == "x" and out[1]["n"] == 3
    expected = tiny_scorer.predict(["love it"])[0]
    assert out[0]["labels"] == {t.value: label for t, label in expected.labels.items()}
    assert out[0]["scores"]["sentiment"] == pytest.approx(expected.scores[Task.SENTIMENT])


def test_csv_output_is_flattened(tiny_scorer: Scorer, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text('id,text\n1,hello there\n2,"quoted, with comma"\n', encoding="utf-8")
    score_file(tiny_scorer, source, tmp_path / "out.csv")
    with (tmp_path / "out.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == ["1", "2"]
    assert rows[1]["text"] == "quoted, with comma"
    for task in Task:
        assert rows[0][f"label.{task.value}"] in LABELS[task]
        total = sum(float(rows[0][f"score.{task.value}.{label}"]) for label in LABELS[task])
        assert total == pytest.approx(1.0, abs=1e-4)


def test_bad_csv_rows_are_reported_with_row_numbers_and_the_rest_scored(
    tiny_scorer: Scorer, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(
        b"id,text\n"
        b"1,fine comment\n"
        b"2,bad \xff\xfe bytes\n"
        b"3,   \n"
        b"4," + b"x" * 5001 + b"\n"
        b"5,too,many,fields\n"
        b"6,also fine \xf0\x9f\x98\x80\n"
    )
    report = score_file(tiny_scorer, source, tmp_path / "out.jsonl")
    assert report.rows_scored == 2
    assert [(e.row, e.message) for e in report.errors] == [
        (2, "invalid UTF-8"),
        (3, "text is empty or only whitespace"),
        (4, "text has 5001 characters; the limit is 5000"),
        (5, "2 more fields than the header has"),
    ]
    assert report.rows_failed == 4
    assert [r["id"] for r in _read_jsonl(tmp_path / "out.jsonl")] == ["1", "6"]
    errors = _read_jsonl(tmp_path / "out.jsonl.errors.jsonl")
    assert [e["row"] for e in errors] == [2, 3, 4, 5]
    assert "\\udcff" in json.dumps(errors[0])


def test_bad_jsonl_rows_are_reported_and_skipped(tiny_scorer: Scorer, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        b'{"id": 1, "text": "ok"}\n'
        b'{"id": 2, "text": "unterminated\n'
        b"[1, 2]\n"
        b'{"id": 4, "body": "no text"}\n'
        b'{"id": 5, "text": 17}\n'
        b'{"id": 6, "text": "\xc3\x28"}\n'
        b"\n"
        b'{"id": 8, "text": "\xd8\xb4\xd9\x83\xd8\xb1\xd8\xa7 zero\xe2\x80\x8bwidth"}\n'
        b'{"id": 9, "author": "half \\udc00", "text": "a cut emoji in another field"}\n'
        b'{"id": 10, "text": "a whole one \\ud83d\\ude00"}\n'
    )
    report = score_file(
        tiny_scorer, source, tmp_path / "out.jsonl", errors_path=tmp_path / "bad.jsonl"
    )
    assert [r["id"] for r in _read_jsonl(tmp_path / "out.jsonl")] == [1, 8, 10]
    messages = {e.row: e.message for e in report.errors}
    assert set(messages) == {2, 3, 4, 5, 6, 9}
    assert messages[9] == "invalid Unicode: an unpaired surrogate escape"
    assert messages[2].startswith("invalid JSON")
    assert messages[3] == "expected a JSON object, got list"
    assert messages[4] == "no 'text' field"
    assert messages[5] == "text must be a string, got int"
    assert messages[6].startswith("invalid UTF-8")
    assert _read_jsonl(tmp_path / "bad.jsonl")[0]["raw"] == '{"id": 2, "text": "unterminated'


def test_text_column_is_found_by_name_or_chosen(tiny_scorer: Scorer, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("Message_ID,Full_Text\nm1,hello\n", encoding="utf-8")
    report = score_file(tiny_scorer, source, tmp_path / "out.csv")
    assert (report.text_column, report.id_column, report.rows_scored) == (
        "Full_Text",
        "Message_ID",
        1,
    )
    source.write_text("message_id,caption,note\nm1,hello,x\n", encoding="utf-8")
    report = score_file(tiny_scorer, source, tmp_path / "out.csv")
    assert (report.text_column, report.id_column) == ("caption", "message_id")
    report = score_file(tiny_scorer, source, tmp_path / "out.csv", text_column="note")
    assert report.text_column == "note"
    with pytest.raises(
        BatchInputError, match="no 'nope' column \\(columns: message_id, caption, note\\)"
    ):
        score_file(tiny_scorer, source, tmp_path / "out.csv", text_column="nope")
    source.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(BatchInputError, match=r"no text column found .*columns: a, b"):
        score_file(tiny_scorer, source, tmp_path / "out.csv")


def test_wrong_delimiter_is_named(tiny_scorer: Scorer, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id;text\n1;hello\n", encoding="utf-8")
    with pytest.raises(BatchInputError, match="holding semicolons: is the delimiter right"):
        score_file(tiny_scorer, source, tmp_path / "out.csv")
    tabbed = tmp_path / "in.tsv"
    tabbed.write_text("id\ttext\n1\thello, there\n", encoding="utf-8")
    report = score_file(tiny_scorer, tabbed, tmp_path / "out.jsonl")
    assert report.rows_scored == 1
    assert _read_jsonl(tmp_path / "out.jsonl")[0]["text"] == "hello, there"


_GZIPPED = gzip.compress(b"text\n" + b"".join(b"comment %d\n" % (i * 7919) for i in range(20_000)))
TRUNCATED_GZIP = _GZIPPED[: len(_GZIPPED) // 2]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("in.csv", b"", "empty"),
        ("in.txt", b"text\nx\n", "unknown file type"),
        ("in.parquet.gz", b"text\nx\n", "unknown file type"),
        ("in.csv", b"te\xffxt\nx\n", "header is not valid UTF-8"),
        ("in.csv", b"text,text\nx,y\n", "repeats a column name"),
        ("in.parquet", b"text\nx\n", "not a readable Parquet file"),
        ("in.csv.gz", TRUNCATED_GZIP, "cannot read beyond chunk .*end-of-stream marker"),
    ],
)
def test_unreadable_inputs_fail_with_a_clear_message(
    tiny_scorer: Scorer, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    with pytest.raises(BatchInputError, match=message):
        score_file(tiny_scorer, source, tmp_path / "out.jsonl")


def test_missing_input_is_a_clear_error(tiny_scorer: Scorer, tmp_path: Path) -> None:
    with pytest.raises(BatchInputError, match="does not exist"):
        score_file(tiny_scorer, tmp_path / "absent.csv", tmp_path / "out.csv")


def test_utf8_bom_is_accepted(tiny_scorer: Scorer, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes("\ufefftext\nhello\n".encode())
    assert score_file(tiny_scorer, source, tmp_path / "out.csv").rows_scored == 1


def test_twenty_thousand_rows(tiny_scorer: Scorer, tmp_path: Path) -> None:
    source = tmp_path / "big.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for i in range(20_000):
            writer.writerow([i, f"comment {i} can you help with order {i % 97}?"])
    report = score_file(tiny_scorer, source, tmp_path / "big.jsonl", chunk_rows=1024)
    assert report.rows_scored == 20_000 and not report.errors
    with (tmp_path / "big.jsonl").open(encoding="utf-8") as handle:
        assert sum(1 for _ in handle) == 20_000
