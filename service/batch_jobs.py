"""Batch jobs of the HTTP API: uploads stored on disk, jobs in the database, one worker thread.

A job's files live in ``state_dir/batches/<token>/``. The worker runs queued jobs oldest first;
a job that was running when the server stopped (or was killed) is run again at the next start
and continues after its last completed chunk (``service.batch`` keeps the parts on disk). A job
interrupted because the database went away is likewise taken up again once it is back.
"""

from __future__ import annotations

import errno
import logging
import secrets
import shutil
import threading
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import or_, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from model.scorer import Scorer
from service.auth import Principal
from service.batch import (
    BatchInputError,
    BatchOutputError,
    count_rows,
    file_type,
    parts_dir,
    score_file,
)
from service.db.tables import BatchJob, utcnow

logger = logging.getLogger(__name__)

# The database is unreachable: no reason to fail a job, whose state cannot be recorded anyway.
DATABASE_ERRORS = (OperationalError, InterfaceError, PoolTimeout)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class JobNotFound(LookupError):
    pass


class JobNotDone(Exception):
    """The result of a job that has not finished (or failed) was asked for."""


@dataclass(frozen=True)
class Progress:
    eta_seconds: float | None
    rows_per_second: float | None


class UploadNotStored(Exception):
    """The server's disk is full (or over quota): the upload cannot be kept."""


def create_job(
    session: Session,
    principal: Principal,
    upload: BinaryIO,
    filename: str,
    output_format: str | None,
    text_column: str | None,
    directory: Path,
) -> BatchJob:
    """Store the upload (copied in blocks, never whole in memory) and queue its job.

    The upload's size is bounded before it gets here (``BodySizeLimit`` on ``/v1/batches``)."""
    name = Path(filename or "upload").name
    in_kind = file_type(Path(name))  # BatchInputError for an unknown type
    out_suffix = in_kind.suffix if output_format is None else "." + output_format.lstrip(".")
    out_kind = file_type(Path("result" + out_suffix))
    folder = directory / secrets.token_hex(8)
    input_path = folder / ("input" + in_kind.suffix)
    try:
        folder.mkdir(parents=True)
        with input_path.open("wb") as out:
            shutil.copyfileobj(upload, out, 1024 * 1024)
    except BaseException as exc:
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise UploadNotStored(
                f"the server cannot store the upload: {exc.strerror}; nothing was queued"
            ) from exc
        raise
    job = BatchJob(
        status=JobStatus.QUEUED.value,
        input_path=str(input_path),
        output_path=str(folder / ("result" + out_kind.suffix)),
        input_name=name[:300],
        text_column=text_column,
        key_id=principal.key_id,
    )
    session.add(job)
    session.commit()
    return job


def get_job(session: Session, job_id: int) -> BatchJob:
    job = session.get(BatchJob, job_id)
    if job is None:
        raise JobNotFound(f"batch job {job_id} does not exist")
    return job


def progress_of(job: BatchJob, now: datetime) -> Progress:
    if job.status != JobStatus.RUNNING.value or job.started_at is None or not job.rows_done:
        return Progress(None, None)
    rate = job.rows_done / max((now - job.started_at).total_seconds(), 1e-3)
    left = (job.rows_total or job.rows_done) - job.rows_done
    return Progress(round(left / rate, 1), round(rate, 1))


def result_path(job: BatchJob, errors: bool = False) -> Path:
    if job.status != JobStatus.DONE.value:
        raise JobNotDone(f"batch job {job.id} is {job.status}; its result is not ready")
    output = Path(job.output_path)
    return output.with_name(output.name + ".errors.jsonl") if errors else output


class _Stopping(Exception):
    """Raised between chunks when the server shuts down; the job resumes at the next start."""


class BatchWorker:
    """One thread, one job at a time: batch scoring must not starve the live API of cores."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        scorer: Scorer,
        max_chars: int,
        chunk_rows: int,
        poll_seconds: float,
    ):
        self.sessions = sessions
        self.scorer = scorer
        self.max_chars = max_chars
        self.chunk_rows = chunk_rows
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="batch-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _next_job(self) -> int | None:
        with self.sessions() as session:
            statement = (
                select(BatchJob.id)
                .where(
                    or_(
                        BatchJob.status == JobStatus.RUNNING.value,
                        BatchJob.status == JobStatus.QUEUED.value,
                    )
                )
                .order_by(BatchJob.id)
                .limit(1)
            )
            return session.scalar(statement)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job_id = self._next_job()
            except Exception:  # the database may be down for a moment: try again later
                logger.exception("batch worker: cannot read the job list")
                job_id = None
            if job_id is None:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
                continue
            try:
                self._run(job_id)
            except _Stopping:
                logger.info(
                    "batch job %d paused for shutdown; it resumes at the next start", job_id
                )
                return
            except Exception as exc:  # its state could not be recorded (the database is away)
                logger.error(
                    "batch job %d interrupted (%s); it resumes from its last chunk",
                    job_id,
                    str(exc).splitlines()[0][:300],
                )
                self._stop.wait(self.poll_seconds)

    def _update(self, job_id: int, **values: object) -> None:
        with self.sessions() as session:
            job = session.get_one(BatchJob, job_id)
            for name, value in values.items():
                setattr(job, name, value)
            job.updated_at = utcnow()
            session.commit()

    def _run(self, job_id: int) -> None:
        with self.sessions() as session:
            job = session.get_one(BatchJob, job_id)
            input_path, output_path = Path(job.input_path), Path(job.output_path)
            text_column = job.text_column
        logger.info("batch job %d: scoring %s", job_id, input_path)
        try:
            total = count_rows(input_path)
            self._update(
                job_id, status=JobStatus.RUNNING.value, rows_total=total, started_at=utcnow()
            )
            done = 0

            def progress(rows: int) -> None:
                nonlocal done
                if self._stop.is_set():
                    raise _Stopping
                done += rows
                self._update(job_id, rows_done=done)

            report = score_file(
                self.scorer,
                input_path,
                output_path,
                text_column=text_column,
                max_chars=self.max_chars,
                chunk_rows=self.chunk_rows,
                progress=progress,
            )
        except (_Stopping, *DATABASE_ERRORS):
            raise
        except (BatchInputError, BatchOutputError) as exc:
            logger.error("batch job %d failed: %s", job_id, exc)
            # A failed job is never resumed: its parts would only take space (a full disk).
            shutil.rmtree(parts_dir(output_path), ignore_errors=True)
            error = str(exc)
            if isinstance(exc, BatchOutputError):  # the server's own paths are not the client's
                error = f"the server cannot write the result ({exc.path.name}): {exc.reason}"
            self._update(job_id, status=JobStatus.FAILED.value, error=error, finished_at=utcnow())
            return
        except Exception as exc:  # a job must never take the worker down with it
            logger.exception("batch job %d failed", job_id)
            shutil.rmtree(parts_dir(output_path), ignore_errors=True)
            self._update(
                job_id,
                status=JobStatus.FAILED.value,
                error=f"{type(exc).__name__}: {exc}",
                finished_at=utcnow(),
            )
            return
        self._update(
            job_id,
            status=JobStatus.DONE.value,
            rows_done=report.rows_read,
            rows_failed=report.rows_failed,
            text_column=report.text_column,
            finished_at=utcnow(),
        )
