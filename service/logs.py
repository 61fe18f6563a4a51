"""Structured logs: one JSON object per line with the request id, for log shippers to index.

Every request gets an id (the caller's ``X-Request-ID`` when it is a sane token, else a new
one), echoed in the response and attached to every log record written while the request runs,
so one grep finds everything a request did. Comment text is never put in a log record by this
module; the access line holds the path without its query string (Perspective clients send API
keys as ``?key=``).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["json", "text"]

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Attributes every LogRecord has; anything else on a record came in through ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "request_id",
    "color_message",  # uvicorn's copy of the message with terminal colours
}


class RedactApiKeys(logging.Filter):
    """Perspective clients send the API key in the query string (``?key=``): keep it out of the
    access log, whose request line holds the query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a for a in record.args)
        return True


_KEY_PARAMETER = re.compile(r"((?:^|[?&])key=)[^&\s]*")


def redact_query(query: str) -> str:
    return _KEY_PARAMETER.sub(r"\1<redacted>", query)


def new_request_id(presented: str | None) -> str:
    """The caller's id when it is a short token of safe characters (it ends up in logs and a
    header), else a fresh random one."""
    if presented is not None and _SANE_ID.fullmatch(presented):
        return presented
    return secrets.token_hex(16)  # as random as uuid4().hex, without building a UUID


class RequestIdFilter(logging.Filter):
    """Puts the current request's id (or None) on every record, for either format."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (current := getattr(record, "request_id", None)) is not None:
            entry["request_id"] = current
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_config(log_format: LogFormat, level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the server (passed to uvicorn): our format for our
    loggers and uvicorn's; uvicorn's own access log is replaced by the service's access line."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter}
        if log_format == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
