"""How every bulkjobs process logs: plain text lines (the default) or one JSON object per line
(``BULKJOBS_LOG_FORMAT=json``), for a log collector.

A JSON line has ``timestamp`` (UTC, ISO 8601), ``level``, ``process`` (api, worker, store or
dev), ``logger`` and ``message``; ``exception`` holds the traceback of a line logged with one;
``job_id`` and ``tenant`` are there when the line concerns a job: pass them with
``extra=about_job(job_id, tenant)``. ``logging_config`` is a ``logging.config.dictConfig``
dictionary, so the worker hands the same one to Faust, which sets logging up itself.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
JOB_FIELDS = ("job_id", "tenant")


def checked_format(log_format: str) -> str:
    """``log_format`` if it is one of FORMATS; a ValueError that says which are otherwise."""
    if log_format not in FORMATS:
        raise ValueError(f"BULKJOBS_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {log_format!r}")
    return log_format


def about_job(job_id: str | None, tenant: str | None = None) -> dict[str, str]:
    """The ``extra`` of a log call that concerns a job: its id and tenant, those known."""
    return {name: value for name, value in zip(JOB_FIELDS, (job_id, tenant), strict=True) if value}


class JsonFormatter(logging.Formatter):
    """A record as one JSON object on one line."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "process": self.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({name: str(value) for name in JOB_FIELDS if (value := getattr(record, name, None))})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line).decode()


def logging_config(process: str, log_format: str, level: str = "INFO") -> dict[str, Any]:
    """The ``dictConfig`` of a process: one handler on stderr at ``level``, in ``log_format``."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter, "process": process} if checked_format(log_format) == "json"
        else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["stderr"]},
    }


def setup_logging(process: str, log_format: str, level: str = "INFO") -> None:
    """Send the process's log to stderr in ``log_format`` (``text`` or ``json``). In JSON, an
    exception nothing caught is logged too, rather than printed as a bare traceback."""
    logging.config.dictConfig(logging_config(process, log_format, level))
    if log_format == "json":
        sys.excepthook = log_uncaught


def log_uncaught(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
    """``sys.excepthook`` in JSON: the exception that ends the process, as a log line."""
    logging.getLogger("bulkjobs").critical("uncaught %s", kind.__name__, exc_info=(kind, value, traceback))
