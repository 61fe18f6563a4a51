"""Score exported comment files (.jsonl, .csv) in bounded memory, row errors set aside, not fatal.

Each output row keeps the input's fields and adds ``labels`` and ``scores`` exactly as the API
returns them (nested in JSONL; flattened to ``label.<task>`` and ``score.<task>.<label>`` in CSV).
Rows that cannot be scored go, with their row number and the reason, to an errors file.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from model.errors import InvalidTextError
from model.scorer import Scorer, check_text
from model.tasks import LABELS
from service.scoring import prediction_fields

logger = logging.getLogger(__name__)

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
CSV_FIELD_LIMIT = 16 * 1024 * 1024


class BatchInputError(ValueError):
    """The input as a whole cannot be read: unknown format, missing file or text column."""


@dataclass(frozen=True)
class RowError:
    row: int
    message: str
    record: Any = None
    raw: str | None = None


@dataclass
class BatchReport:
    rows_read: int = 0
    rows_scored: int = 0
    errors: list[RowError] = field(default_factory=list)


@dataclass(frozen=True)
class Row:
    number: int
    record: dict[str, Any] | None
    error: str | None = None
    raw: str | None = None


def file_format(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        known = ", ".join(sorted(FORMATS))
        raise BatchInputError(
            f"{path}: unknown file type {path.suffix!r}; use one of {known}"
        ) from None


def _jsonl_rows(handle: IO[bytes]) -> Iterator[Row]:
    for number, raw in enumerate(handle, start=1):
        if not raw.strip():
            continue
        kept = raw.rstrip(b"\r\n").decode("utf-8", "backslashreplace")
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            yield Row(number, None, f"invalid UTF-8 at byte {exc.start}", kept)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Row(number, None, f"invalid JSON: {exc.msg} at column {exc.colno}", kept)
            continue
        if not isinstance(record, dict):
            yield Row(number, None, f"expected a JSON object, got {type(record).__name__}", kept)
            continue
        yield Row(number, record)


def _has_bad_bytes(value: Any) -> bool:
    # surrogateescape turns undecodable bytes into lone surrogates: their presence means bad UTF-8.
    return isinstance(value, str) and any("\udc80" <= ch <= "\udcff" for ch in value)


def _csv_rows(handle: IO[str], text_column: str) -> Iterator[Row]:
    reader = csv.DictReader(handle)
    header = reader.fieldnames
    if not header:
        raise BatchInputError("the CSV file is empty: no header row")
    if any(_has_bad_bytes(name) for name in header):
        raise BatchInputError("the CSV header is not valid UTF-8")
    if text_column not in header:
        raise BatchInputError(
            f"the CSV has no {text_column!r} column (columns: {', '.join(header)}); "
            "choose one with --text-column"
        )
    number = 0
    while True:
        number += 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Row(number, None, f"malformed CSV: {exc}")
            continue
        if None in record:
            extra = record.pop(None)  # type: ignore[call-overload,unused-ignore]
            yield Row(
                number,
                None,
                f"{len(extra)} more fields than the header has",
                str([*record.values(), *extra]),
            )
        elif any(_has_bad_bytes(value) for value in record.values()):
            yield Row(number, None, "invalid UTF-8", str(list(record.values())))
        else:
            yield Row(number, record)


class _JsonlWriter:
    def __init__(self, handle: IO[str]):
        self.handle = handle

    def write(self, record: dict[str, Any], fields: dict[str, Any]) -> None:
        self.handle.write(json.dumps({**record, **fields}, ensure_ascii=False) + "\n")


class _CsvWriter:
    def __init__(self, handle: IO[str], scorer: Scorer):
        self.handle = handle
        self.tasks = scorer.tasks
        self.writer: csv.DictWriter[str] | None = None

    def write(self, record: dict[str, Any], fields: dict[str, Any]) -> None:
        flat = dict(record)
        for task in self.tasks:
            flat[f"label.{task.value}"] = fields["labels"][task.value]
            for label in LABELS[task]:
                flat[f"score.{task.value}.{label}"] = round(fields["scores"][task.value][label], 6)
        if self.writer is None:
            self.writer = csv.DictWriter(self.handle, fieldnames=list(flat), extrasaction="ignore")
            self.writer.writeheader()
        self.writer.writerow(flat)


def score_file(
    scorer: Scorer,
    input_path: Path,
    output_path: Path,
    errors_path: Path | None = None,
    text_column: str = "text",
    max_chars: int = 5000,
    batch_size: int = 256,
) -> BatchReport:
    """Stream ``input_path`` through the scorer into ``output_path``; bad rows go to ``errors_path``."""
    in_format, out_format = file_format(input_path), file_format(output_path)
    if not input_path.is_file():
        raise BatchInputError(f"input file {input_path} does not exist")
    errors_path = errors_path or output_path.with_name(output_path.name + ".errors.jsonl")
    report = BatchReport()
    csv.field_size_limit(CSV_FIELD_LIMIT)
    with (
        input_path.open("rb") as raw_in,
        input_path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="") as text_in,
        output_path.open("w", encoding="utf-8", newline="") as out,
        errors_path.open("w", encoding="utf-8") as errors_out,
    ):
        rows = _jsonl_rows(raw_in) if in_format == "jsonl" else _csv_rows(text_in, text_column)
        writer = _JsonlWriter(out) if out_format == "jsonl" else _CsvWriter(out, scorer)
        pending: list[tuple[dict[str, Any], str]] = []

        def flush() -> None:
            predictions = scorer.predict([text for _, text in pending])
            for (record, _), prediction in zip(pending, predictions, strict=True):
                writer.write(record, prediction_fields(prediction))
            report.rows_scored += len(pending)
            pending.clear()

        for row in rows:
            report.rows_read += 1
            message = row.error
            if row.record is not None:
                try:
                    if text_column not in row.record:
                        raise InvalidTextError(f"no {text_column!r} field")
                    pending.append((row.record, check_text(row.record[text_column], max_chars)))
                except InvalidTextError as exc:
                    message = str(exc)
            if message is not None:
                error = RowError(row.number, message, row.record, row.raw)
                report.errors.append(error)
                logger.warning("row %d: %s", row.number, message)
                # ASCII escapes keep undecodable bytes (lone surrogates) writable.
                errors_out.write(json.dumps(error.__dict__, default=str) + "\n")
            if len(pending) >= batch_size:
                flush()
        if pending:
            flush()
    return report
