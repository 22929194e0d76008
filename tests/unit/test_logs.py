"""The log formats: one JSON object per line with BULKJOBS_LOG_FORMAT=json, text otherwise."""

from __future__ import annotations

import io
import logging
import logging.config
import sys
from collections.abc import Iterator
from datetime import datetime

import orjson
import pytest

from bulkjobs.logs import JsonFormatter, about_job, logging_config, setup_logging
from bulkjobs.settings import Settings


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose lines go, formatted as JSON by the worker, to a string."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("worker"))
    logger = logging.getLogger("bulkjobs.test_logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_is_a_json_object_with_its_time_level_process_logger_and_message(
        logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = logged
    logger.warning("%d records of %s", 3, "a job")
    [line] = lines(out)
    assert set(line) == {"timestamp", "level", "process", "logger", "message"}
    assert line["level"] == "WARNING" and line["process"] == "worker" and line["logger"] == "bulkjobs.test_logs"
    assert line["message"] == "3 records of a job"
    stamp = datetime.fromisoformat(str(line["timestamp"]))
    assert stamp.utcoffset() is not None and abs(stamp.timestamp() - datetime.now().timestamp()) < 60


def test_a_line_about_a_job_names_the_job_and_its_tenant(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = logged
    logger.error("failed", extra=about_job("j1", "acme"))
    logger.error("failed", extra=about_job("j2", None))  # a malformed message may name no tenant
    first, second = lines(out)
    assert (first["job_id"], first["tenant"]) == ("j1", "acme")
    assert second["job_id"] == "j2" and "tenant" not in second


def test_a_traceback_stays_in_the_line(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = logged
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logger.exception("it broke")
    assert len(out.getvalue().splitlines()) == 1
    [line] = lines(out)
    assert line["message"] == "it broke"
    assert "Traceback" in str(line["exception"]) and "ValueError: bad\nvalue" in str(line["exception"])


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_configuration_logs_to_stderr_in_the_format(log_format: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logging.config.dictConfig(logging_config("store", log_format))
        logging.getLogger("bulkjobs.test_logs").info("hello", extra=about_job("j1", "acme"))
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    err = capsys.readouterr().err
    if log_format == "json":
        assert orjson.loads(err)["process"] == "store"
    else:
        assert err.rstrip().endswith("bulkjobs.test_logs INFO hello")


def test_the_log_format_is_a_setting_text_by_default() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"BULKJOBS_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ValueError, match="BULKJOBS_LOG_FORMAT must be one of text, json"):
        Settings.from_env({"BULKJOBS_LOG_FORMAT": "xml"})


def test_in_json_an_uncaught_exception_is_a_log_line(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, sys.excepthook
    try:
        setup_logging("store", "json")
        try:
            raise RuntimeError("the end")
        except RuntimeError as exc:
            sys.excepthook(type(exc), exc, exc.__traceback__)
    finally:
        root.handlers[:], _, sys.excepthook = saved
        root.setLevel(saved[1])
    [line] = capsys.readouterr().err.splitlines()
    entry = orjson.loads(line)
    assert (entry["level"], entry["message"]) == ("CRITICAL", "uncaught RuntimeError")
    assert "RuntimeError: the end" in entry["exception"]
