"""Batch jobs over HTTP: upload a file, follow its progress, download the scored result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from service.batch import BatchInputError
from service.batch_jobs import (
    BatchWorker,
    create_job,
    get_job,
    progress_of,
    result_path,
)
from service.db.tables import BatchJob, utcnow
from service.deps import ScoringClient, SessionDep, SettingsDep
from service.schemas import (
    AUTH_ERRORS,
    BODY_ERRORS,
    BatchJobOut,
    PathId,
    error_responses,
    unstorable,
)

router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=AUTH_ERRORS)
NO_JOB = (404, "No such job.")
MAX_NAME_CHARS = 300  # batch_jobs.input_name
MEDIA_TYPES = {
    ".jsonl": "application/x-ndjson",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".parquet": "application/vnd.apache.parquet",
    ".gz": "application/gzip",
}
FILE_CONTENT = {
    media_type: {"schema": {"type": "string", "format": "binary"}}
    for media_type in (*MEDIA_TYPES.values(), "application/octet-stream")
}


def job_out(job: BatchJob) -> BatchJobOut:
    progress = progress_of(job, utcnow())
    done = job.status == "done"
    return BatchJobOut(
        id=job.id,
        status=job.status,
        input_name=job.input_name,
        text_column=job.text_column,
        rows_total=job.rows_total,
        rows_done=job.rows_done,
        rows_failed=job.rows_failed,
        rows_per_second=progress.rows_per_second,
        eta_seconds=progress.eta_seconds,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        result_url=f"/v1/batches/{job.id}/result" if done else None,
        errors_url=f"/v1/batches/{job.id}/errors" if done else None,
    )


@router.post(
    "",
    response_model=BatchJobOut,
    status_code=202,
    summary="Upload a file of comments to score in the background",
    responses={
        **BODY_ERRORS,
        **error_responses(
            (413, "The file is over the upload limit."),
            (422, "No file, or an unknown file type or output format."),
            (507, "The server's disk is full: the upload was not stored."),
        ),
    },
)
async def create_batch(
    request: Request,
    principal: ScoringClient,
    session: SessionDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="CSV, TSV, JSONL (maybe .gz) or Parquet.")],
    output_format: Annotated[
        str | None,
        Form(
            description="csv, tsv, jsonl, parquet (maybe .gz); default: the input's.", max_length=20
        ),
    ] = None,
    text_column: Annotated[
        str | None, Form(description="Column of the text; default: found by name.", max_length=200)
    ] = None,
) -> BatchJobOut:
    name = Path(file.filename or "").name
    if len(name) > MAX_NAME_CHARS:
        raise BatchInputError(
            f"the file name has {len(name)} characters; the limit is {MAX_NAME_CHARS}"
        )
    for field, value in (("the file name", name), ("text_column", text_column or "")):
        if (problem := unstorable(value)) is not None:
            raise BatchInputError(f"{field} {problem}")
    job = await run_in_threadpool(
        create_job,
        session,
        principal,
        file.file,
        file.filename or "",
        output_format,
        text_column,
        settings.state_dir / "batches",
    )
    worker: BatchWorker | None = request.app.state.batch_worker
    if worker is not None:
        worker.wake()
    return job_out(job)


@router.get(
    "/{job_id}",
    response_model=BatchJobOut,
    summary="Status, progress and ETA of a batch job",
    responses=error_responses(NO_JOB, 422),
)
def read_batch(job_id: PathId, _: ScoringClient, session: SessionDep) -> BatchJobOut:
    return job_out(get_job(session, job_id))


def _download(job: BatchJob, errors: bool) -> FileResponse:
    path = result_path(job, errors)
    suffix = ".jsonl" if errors else path.suffix
    stem = job.input_name.split(".")[0] or "batch"
    name = f"{stem}.{'errors' if errors else 'scored'}{''.join(path.suffixes)}"
    return FileResponse(
        path, media_type=MEDIA_TYPES.get(suffix, "application/octet-stream"), filename=name
    )


@router.get(
    "/{job_id}/result",
    response_class=FileResponse,
    summary="The scored file (streamed)",
    responses={
        200: {
            "description": "The scored file, in the job's output format.",
            "content": FILE_CONTENT,
        },
        **error_responses(NO_JOB, (409, "Not done yet."), 422),
    },
)
def read_result(job_id: PathId, _: ScoringClient, session: SessionDep) -> FileResponse:
    return _download(get_job(session, job_id), errors=False)


@router.get(
    "/{job_id}/errors",
    response_class=FileResponse,
    summary="The rows that could not be scored, with row numbers and reasons (JSONL)",
    responses={
        200: {"description": "One JSON object per line.", "content": FILE_CONTENT},
        **error_responses(NO_JOB, (409, "Not done yet."), 422),
    },
)
def read_errors(job_id: PathId, _: ScoringClient, session: SessionDep) -> FileResponse:
    return _download(get_job(session, job_id), errors=True)
