"""Score exported comment files in bounded memory, resumably, with bad rows set aside.

Formats by extension: ``.csv``, ``.tsv``, ``.jsonl``/``.ndjson`` (each optionally ``.gz``) and
``.parquet``. Each output row keeps the input's fields and adds ``labels`` and ``scores`` exactly
as the API returns them (nested in JSONL; flattened to ``label.<task>`` and
``score.<task>.<label>`` columns elsewhere). Rows that cannot be scored go, with their row number
and the reason, to an errors file; they never stop the run.

The input is read in chunks of ``chunk_rows`` rows. Each scored chunk is written as its own part
under ``OUTPUT.parts/`` (renamed into place when complete), so a run that is killed continues,
when the same command is run again, after the last complete chunk; at the end the parts are
joined into the output in input order and removed. Scoring itself is an ``Engine``: the local
one calls the scorer in this process; ``service.batch_ray`` spreads it over a Ray cluster.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, cast

import numpy as np

from model.errors import InvalidTextError
from model.scorer import Scorer, Scores, check_text
from model.tasks import LABELS, Task
from service.scoring import prediction_fields

logger = logging.getLogger(__name__)

FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
}
DELIMITERS = {"csv": ",", "tsv": "\t"}
# Where the common exports (networks, inbox tools, scrapers) keep the comment and its id.
TEXT_COLUMNS = ("text", "message", "comment", "body", "content", "full_text", "caption")
ID_COLUMNS = ("id", "comment_id", "message_id", "tweet_id", "post_id", "uuid")
CSV_FIELD_LIMIT = 16 * 1024 * 1024
STATE_VERSION = 1
MAX_SAMPLE_ERRORS = 100


class BatchInputError(ValueError):
    """The input as a whole cannot be read: unknown format, missing file or text column."""


class BatchOutputError(RuntimeError):
    """The output cannot be written (disk full, file too large, no permission): the run stops,
    no partial output is left under the output's name, and the completed chunks are kept."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path
        self.reason = reason


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
    rows_failed: int = 0
    label_counts: dict[str, Counter[str]] = field(default_factory=dict)
    chunks_resumed: int = 0
    seconds: float = 0.0
    text_column: str | None = None
    id_column: str | None = None
    errors: list[RowError] = field(default_factory=list)  # the first MAX_SAMPLE_ERRORS

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Row:
    number: int
    record: dict[str, Any] | None
    error: str | None = None
    raw: str | None = None


@dataclass(frozen=True)
class FileType:
    format: str
    gzip: bool = False

    @property
    def suffix(self) -> str:
        suffix = {"jsonl": ".jsonl", "csv": ".csv", "tsv": ".tsv", "parquet": ".parquet"}
        return suffix[self.format] + (".gz" if self.gzip else "")


def file_type(path: Path) -> FileType:
    name = path.name.lower()
    compressed = name.endswith(".gz")
    stem = Path(name[:-3]) if compressed else Path(name)
    fmt = FORMATS.get(stem.suffix)
    if fmt is None or (compressed and fmt == "parquet"):
        known = ", ".join(sorted({*FORMATS, *(f"{k}.gz" for k in FORMATS if k != ".parquet")}))
        raise BatchInputError(f"{path}: unknown file type {path.name!r}; use one of {known}")
    return FileType(fmt, compressed)


def default_output(path: Path) -> Path:
    """``comments.csv.gz`` -> ``comments.scored.csv.gz``: same folder, same format."""
    name = path.name
    compressed = name.lower().endswith(".gz")
    stem, extension = os.path.splitext(name[:-3] if compressed else name)
    return path.with_name(f"{stem}.scored{extension}{'.gz' if compressed else ''}")


# ---------------------------------------------------------------------------------------------
# Reading


def _open_binary(path: Path, kind: FileType) -> IO[bytes]:
    return cast(IO[bytes], gzip.open(path, "rb")) if kind.gzip else path.open("rb")


def _has_bad_bytes(value: str) -> bool:
    """surrogateescape turns undecodable bytes into lone surrogates, which UTF-8 cannot encode."""
    if value.isascii():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


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
        if _SURROGATE_ESCAPE.search(line) and not _valid_unicode(record):
            yield Row(number, None, "invalid Unicode: an unpaired surrogate escape", kept)
            continue
        yield Row(number, record)


# JSON may spell a lone UTF-16 surrogate as an escape; such a value could not be written out.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _valid_unicode(record: dict[str, Any]) -> bool:
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _delimited_rows(reader: Iterator[list[str]], header: list[str]) -> Iterator[Row]:
    number = 0
    while True:
        number += 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Row(number, None, f"malformed row: {exc}")
            continue
        if not values:
            number -= 1  # a blank line is no row
            continue
        raw = str(values)
        if len(values) > len(header):
            extra = len(values) - len(header)
            yield Row(number, None, f"{extra} more fields than the header has", raw)
        elif len(values) < len(header):
            missing = len(header) - len(values)
            yield Row(number, None, f"{missing} fewer fields than the header has", raw)
        elif _has_bad_bytes("".join(values)):
            yield Row(number, None, "invalid UTF-8", raw)
        else:
            yield Row(number, dict(zip(header, values, strict=True)))


def _parquet_rows(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            number += 1
            yield Row(number, record)


@dataclass
class Source:
    """An open input: its columns (None for JSONL: each object has its own) and its rows."""

    columns: list[str] | None
    rows: Iterator[Row]


@contextmanager
def open_source(path: Path, kind: FileType) -> Iterator[Source]:
    if not path.is_file():
        raise BatchInputError(f"input file {path} does not exist")
    if kind.format == "parquet":
        import pyarrow.parquet as pq

        try:
            names = list(pq.ParquetFile(path).schema_arrow.names)
        except Exception as exc:  # pyarrow raises several kinds for a file that is not Parquet
            raise BatchInputError(f"{path} is not a readable Parquet file: {exc}") from exc
        yield Source(names, _parquet_rows(path))
        return
    if kind.format == "jsonl":
        with _open_binary(path, kind) as binary:
            yield Source(None, _jsonl_rows(binary))
        return
    csv.field_size_limit(CSV_FIELD_LIMIT)
    with (
        _open_binary(path, kind) as binary,
        io.TextIOWrapper(
            binary, encoding="utf-8-sig", errors="surrogateescape", newline=""
        ) as text,
    ):
        reader = csv.reader(text, delimiter=DELIMITERS[kind.format])
        try:
            header = next(reader)
        except StopIteration:
            raise BatchInputError(f"{path} is empty: no header row") from None
        except (csv.Error, OSError, EOFError) as exc:
            raise BatchInputError(f"{path}: cannot read the header: {exc}") from exc
        if _has_bad_bytes("".join(header)):
            raise BatchInputError(f"{path}: the header is not valid UTF-8")
        if len(set(header)) != len(header):
            raise BatchInputError(f"{path}: the header repeats a column name: {header}")
        yield Source(header, _delimited_rows(reader, header))


def count_rows(path: Path) -> int:
    """Rows in the input (a quick pass without scoring), for progress and ETA."""
    kind = file_type(path)
    if kind.format == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    with open_source(path, kind) as source:
        return sum(1 for _ in source.rows)


def find_column(
    columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str
) -> str | None:
    """``wanted`` if given (it must exist), else the first common export name present."""
    if wanted is not None:
        if wanted not in columns:
            raise BatchInputError(
                f"no {wanted!r} column (columns: {', '.join(columns)}); "
                f"choose the {what} column with --{what}-column"
            )
        return wanted
    by_name = {column.strip().lower(): column for column in columns}
    return next((by_name[name] for name in candidates if name in by_name), None)


def _missing_text_column(columns: Sequence[str], kind: FileType) -> BatchInputError:
    hint = ""
    if len(columns) == 1 and kind.format in DELIMITERS:
        other = {";": "semicolons", "\t": "tabs", ",": "commas", "|": "pipes"}
        found = [name for sep, name in other.items() if sep in columns[0]]
        if found:
            hint = (
                f"; the header is one column holding {found[0]}: is the delimiter right? "
                f"(.csv means commas, .tsv tabs)"
            )
    return BatchInputError(
        f"no text column found (looked for {', '.join(TEXT_COLUMNS)}; columns: "
        f"{', '.join(columns)}){hint}; choose one with --text-column"
    )


# ---------------------------------------------------------------------------------------------
# Writing one part per chunk


def _flat_value(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def score_columns(tasks: Sequence[Task]) -> list[str]:
    columns = []
    for task in tasks:
        columns.append(f"label.{task.value}")
        columns.extend(f"score.{task.value}.{label}" for label in LABELS[task])
    return columns


def _flat_columns(
    records: list[dict[str, Any]], inputs: Sequence[str], scores: Scores
) -> list[list[Any]]:
    """Column by column: input values as text, then per task its label and probabilities
    rounded to 6 places (``score_columns`` order); built from the arrays, no dict per row."""
    columns = [[_flat_value(record.get(name)) for record in records] for name in inputs]
    for task, labels in scores.labels.items():
        columns.append(labels.tolist())
        columns.extend(np.round(scores.probabilities[task], 6).T.tolist())
    return columns


def _encode_text_part(
    kind: FileType,
    records: list[dict[str, Any]],
    scores: Scores,
    columns: list[str],
    input_columns: int,
    header: bool,
) -> bytes:
    buffer = io.StringIO()
    if kind.format == "jsonl":
        for record, prediction in zip(records, scores.predictions(), strict=True):
            fields = prediction_fields(prediction)
            buffer.write(json.dumps({**record, **fields}, ensure_ascii=False, default=str) + "\n")
    else:
        writer = csv.writer(buffer, delimiter=DELIMITERS[kind.format], lineterminator="\n")
        if header:
            writer.writerow(columns)
        if records:
            writer.writerows(
                zip(*_flat_columns(records, columns[:input_columns], scores), strict=True)
            )
    data = buffer.getvalue().encode("utf-8", "surrogateescape")
    # Each part of a .gz output is a complete gzip member: members joined are one valid file.
    return gzip.compress(data, mtime=0) if kind.gzip else data


def _parquet_schema(columns: list[str], input_columns: int) -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field(
                name,
                pa.string() if i < input_columns or name.startswith("label.") else pa.float64(),
            )
            for i, name in enumerate(columns)
        ]
    )


def _write_parquet_part(
    path: Path,
    records: list[dict[str, Any]],
    scores: Scores,
    columns: list[str],
    input_columns: int,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema(columns, input_columns)
    values = _flat_columns(records, columns[:input_columns], scores)
    arrays = [
        pa.array(column, type=field.type) for column, field in zip(values, schema, strict=True)
    ]
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path)


@contextmanager
def _writing(path: Path, *partial: Path) -> Iterator[None]:
    """A failed write becomes a :class:`BatchOutputError` naming ``path`` and the reason (an
    ``OSError`` from ``write`` does not name its file); the ``partial`` files are removed."""
    try:
        yield
    except OSError as exc:
        for leftover in partial:
            with suppress(OSError):
                leftover.unlink(missing_ok=True)
        reason = exc.strerror if exc.strerror and exc.filename is None else str(exc)
        raise BatchOutputError(path, reason) from exc


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with _writing(path, temporary):
        temporary.write_bytes(data)
        os.replace(temporary, path)


def parts_dir(output_path: Path) -> Path:
    """Where the chunks of a run writing ``output_path`` are kept until it completes."""
    return output_path.with_name(output_path.name + ".parts")


# ---------------------------------------------------------------------------------------------
# Engines


class Engine(Protocol):
    """Turns chunks of texts into scores, chunk by chunk, in order."""

    def score(self, chunks: Iterator[list[str]]) -> Iterator[Scores]: ...


class LocalEngine:
    """The scorer in this process (the ONNX scorer already uses every core)."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer

    def score(self, chunks: Iterator[list[str]]) -> Iterator[Scores]:
        for texts in chunks:
            yield self.scorer.score(texts)


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class _Chunk:
    index: int
    rows: int
    valid: list[tuple[dict[str, Any], str]]
    errors: list[RowError]


def _fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _part_meta(work: Path, index: int) -> Path:
    return work / f"part-{index:06d}.json"


def _completed_chunks(work: Path) -> int:
    done = 0
    while _part_meta(work, done).exists():
        done += 1
    return done


def _error_line(error: RowError, id_column: str | None) -> str:
    entry: dict[str, Any] = {"row": error.row, "message": error.message}
    if id_column and isinstance(error.record, dict) and id_column in error.record:
        entry["id"] = error.record[id_column]
    entry["record"] = error.record
    entry["raw"] = error.raw
    # ASCII escapes keep undecodable bytes (lone surrogates) writable.
    return json.dumps(entry, default=str) + "\n"


def score_file(
    scorer: Scorer,
    input_path: Path,
    output_path: Path,
    errors_path: Path | None = None,
    text_column: str | None = None,
    id_column: str | None = None,
    max_chars: int = 5000,
    chunk_rows: int = 2048,
    engine: Engine | None = None,
    restart: bool = False,
    progress: Callable[[int], None] | None = None,
) -> BatchReport:
    """Stream ``input_path`` through the engine into ``output_path``; bad rows go to
    ``errors_path`` (default ``OUTPUT.errors.jsonl``). Rerunning after a crash resumes."""
    started = time.perf_counter()
    in_kind, out_kind = file_type(input_path), file_type(output_path)
    if input_path.resolve() == output_path.resolve():
        raise BatchInputError("the output would overwrite the input; choose another path")
    errors_path = errors_path or output_path.with_name(output_path.name + ".errors.jsonl")
    work = parts_dir(output_path)
    engine = engine or LocalEngine(scorer)
    tasks = list(scorer.tasks)
    report = BatchReport(label_counts={task.value: Counter() for task in tasks})

    with open_source(input_path, in_kind) as source:
        rows = source.rows
        columns = source.columns
        first: list[Row] = []
        if columns is None:  # JSONL: the columns of the first object
            for row in rows:
                first.append(row)
                if row.record is not None:
                    columns = list(row.record)
                    break
            columns = columns or []
        text_name = find_column(columns, text_column, TEXT_COLUMNS, "text")
        if text_name is None and columns:
            raise _missing_text_column(columns, in_kind)
        text_name = text_name or text_column or "text"
        id_name = find_column(columns, id_column, ID_COLUMNS, "id") if columns else id_column
        report.text_column, report.id_column = text_name, id_name
        out_columns = [*columns, *score_columns(tasks)]
        state = {
            "version": STATE_VERSION,
            "input": _fingerprint(input_path),
            "output": out_kind.suffix,
            "text_column": text_name,
            "chunk_rows": chunk_rows,
            "max_chars": max_chars,
            "model": [scorer.name, scorer.version],
            "columns": out_columns,
        }
        done = _prepare_work_dir(work, state, restart)
        report.chunks_resumed = done
        rows_iter = itertools.chain(first, rows)

        def chunks() -> Iterator[_Chunk]:
            index = 0
            while True:
                batch: list[Row] = []
                try:
                    for row in rows_iter:
                        batch.append(row)
                        if len(batch) == chunk_rows:
                            break
                except (OSError, EOFError, ValueError) as exc:  # truncated or corrupt file
                    raise BatchInputError(
                        f"{input_path}: cannot read beyond chunk {index}: {exc}; the "
                        "completed chunks are kept"
                    ) from exc
                if not batch:
                    return
                if index < done:  # written by an earlier run
                    if progress is not None:
                        progress(len(batch))
                    index += 1
                    continue
                valid, errors = [], []
                for row in batch:
                    message = row.error
                    if row.record is not None:
                        try:
                            if text_name not in row.record:
                                raise InvalidTextError(f"no {text_name!r} field")
                            valid.append((row.record, check_text(row.record[text_name], max_chars)))
                        except InvalidTextError as exc:
                            message = str(exc)
                    if message is not None:
                        errors.append(RowError(row.number, message, row.record, row.raw))
                yield _Chunk(index, len(batch), valid, errors)
                index += 1

        pending: list[_Chunk] = []

        def texts() -> Iterator[list[str]]:
            for chunk in chunks():
                pending.append(chunk)
                yield [text for _, text in chunk.valid]

        for scores in engine.score(texts()):
            chunk = pending.pop(0)
            if len(scores) != len(chunk.valid):
                raise RuntimeError(f"{len(scores)} scores for {len(chunk.valid)} comments")
            _write_part(work, chunk, scores, out_kind, out_columns, len(columns), id_name)
            if progress is not None:
                progress(chunk.rows)

    _assemble(work, output_path, errors_path, out_kind, out_columns, len(columns), report)
    report.seconds = time.perf_counter() - started
    return report


def _prepare_work_dir(work: Path, state: dict[str, Any], restart: bool) -> int:
    """Chunks an earlier run of the same command completed (0 for a fresh run)."""
    state_file = work / "state.json"
    if work.exists() and not restart:
        try:
            earlier = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            earlier = None
        if earlier == state:
            done = _completed_chunks(work)
            if done:
                logger.info("resuming after %d completed chunks in %s", done, work)
            return done
        if earlier is not None:
            raise BatchInputError(
                f"{work} holds an unfinished run with another input, model or options; "
                "rerun that command to finish it, or pass --restart to discard it"
            )
    with _writing(work):
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
    _atomic_write(state_file, json.dumps(state).encode())
    return 0


def _write_part(
    work: Path,
    chunk: _Chunk,
    scores: Scores,
    kind: FileType,
    columns: list[str],
    input_columns: int,
    id_column: str | None,
) -> None:
    """Data, then errors, then the meta file: the meta file's presence marks the chunk done."""
    data = work / f"part-{chunk.index:06d}{kind.suffix}"
    records = [record for record, _ in chunk.valid]
    if kind.format == "parquet":
        temporary = data.with_name(data.name + ".tmp")
        with _writing(data, temporary):
            _write_parquet_part(temporary, records, scores, columns, input_columns)
            os.replace(temporary, data)
    else:
        part = _encode_text_part(
            kind, records, scores, columns, input_columns, header=chunk.index == 0
        )
        _atomic_write(data, part)
    errors = "".join(_error_line(e, id_column) for e in chunk.errors)
    _atomic_write(work / f"errors-{chunk.index:06d}.jsonl", errors.encode())
    labels = {task.value: Counter(values.tolist()) for task, values in scores.labels.items()}
    meta = {
        "rows": chunk.rows,
        "scored": len(records),
        "failed": len(chunk.errors),
        "labels": labels,
        "sample_errors": [
            {"row": e.row, "message": e.message} for e in chunk.errors[:MAX_SAMPLE_ERRORS]
        ],
    }
    _atomic_write(_part_meta(work, chunk.index), json.dumps(meta).encode())


def _assemble(
    work: Path,
    output: Path,
    errors_path: Path,
    kind: FileType,
    columns: list[str],
    input_columns: int,
    report: BatchReport,
) -> None:
    """Join the parts in order into the output and the errors file, then remove them."""
    count = _completed_chunks(work)
    temporary = output.with_name(output.name + ".tmp")
    errors_temporary = errors_path.with_name(errors_path.name + ".tmp")
    # A failure (disk full) leaves neither file half-written; the parts stay for a rerun.
    with _writing(output, temporary):
        if kind.format == "parquet":
            import pyarrow.parquet as pq

            schema = _parquet_schema(columns, input_columns)
            with pq.ParquetWriter(temporary, schema) as writer:
                for index in range(count):
                    writer.write_table(pq.read_table(work / f"part-{index:06d}{kind.suffix}"))
        else:
            with temporary.open("wb") as out:
                if count == 0 and kind.format != "jsonl":
                    empty = _encode_text_part(kind, [], Scores.empty([]), columns, 0, header=True)
                    out.write(empty)
                for index in range(count):
                    with (work / f"part-{index:06d}{kind.suffix}").open("rb") as part:
                        shutil.copyfileobj(part, out)
    with (
        _writing(errors_path, errors_temporary, temporary),
        errors_temporary.open("wb") as errors_out,
    ):
        for index in range(count):
            with (work / f"errors-{index:06d}.jsonl").open("rb") as part:
                shutil.copyfileobj(part, errors_out)
    for index in range(count):
        meta = json.loads(_part_meta(work, index).read_text(encoding="utf-8"))
        report.rows_read += meta["rows"]
        report.rows_scored += meta["scored"]
        report.rows_failed += meta["failed"]
        for task, counts in meta["labels"].items():
            report.label_counts.setdefault(task, Counter()).update(counts)
        room = MAX_SAMPLE_ERRORS - len(report.errors)
        report.errors.extend(RowError(e["row"], e["message"]) for e in meta["sample_errors"][:room])
    with _writing(output, errors_temporary, temporary):
        os.replace(errors_temporary, errors_path)  # the output last: its presence means done
        os.replace(temporary, output)
    shutil.rmtree(work)
