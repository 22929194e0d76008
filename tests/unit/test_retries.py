"""Retries' pure parts: what may be retried, which records a retry takes, the retry file cut
from the original byte for byte, and the source index each retried record's batch carries."""

from __future__ import annotations

import codecs
from typing import Any

import orjson
import pytest

from bulkjobs.domain.csv_files import RowReader
from bulkjobs.domain.jobs import STATUSES, TERMINAL
from bulkjobs.domain.retries import Selection, check_retryable, cut_rows, retried_outcomes
from bulkjobs.errors import BadRequest, Conflict
from bulkjobs.kafka.batching import MAX_MESSAGE_BYTES, Batcher


def test_failed_records_are_retried_and_skipped_ones_only_when_asked() -> None:
    assert retried_outcomes(None) == {"failed"}
    assert retried_outcomes("skipped") == {"failed", "skipped"}


@pytest.mark.parametrize("include", ["", "failed", "created", "Skipped", "skipped,failed", "x" * 1000])
def test_any_other_include_is_a_400_naming_it(include: str) -> None:
    with pytest.raises(BadRequest) as refused:
        retried_outcomes(include)
    assert refused.value.details["field"] == "include" and len(refused.value.message) < 300


def job(status: str = "partially_succeeded", **fields: Any) -> dict[str, Any]:
    return {"id": "j", "type": "resources", "status": status, "schedule": None, **fields}


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_a_finished_job_may_be_retried(status: str) -> None:
    check_retryable(job(status))


@pytest.mark.parametrize("status", [status for status in STATUSES if status not in TERMINAL])
def test_a_job_not_finished_is_409_with_its_status(status: str) -> None:
    with pytest.raises(Conflict) as refused:
        check_retryable(job(status, schedule={"cron": "0 * * * *"} if status == "scheduled" else None))
    assert refused.value.code == ("not_retryable" if status == "scheduled" else "job_not_finished")


@pytest.mark.parametrize("retried", [job(type="export"), job("cancelled", schedule={"cron": "0 * * * *"})],
                         ids=["export", "cancelled-definition"])
def test_an_export_or_a_definition_is_not_retryable(retried: dict[str, Any]) -> None:
    with pytest.raises(Conflict) as refused:
        check_retryable(retried)
    assert refused.value.code == "not_retryable"


RESULTS = [(0, "created"), (1, "failed"), (2, "skipped"), (4, "updated"), (5, "failed")]  # 3, 6: never applied


@pytest.mark.parametrize(("include", "picked"), [(None, [1, 5]), ("skipped", [1, 2, 3, 5, 6])])
def test_a_selection_takes_the_outcomes_asked_and_with_skipped_the_records_never_applied(
        include: str | None, picked: list[int]) -> None:
    selection = Selection(7, retried_outcomes(include))
    selection.add_results(RESULTS[:2])
    selection.add_results(RESULTS[2:] + [(7, "failed"), (-1, "failed")])  # outside the job: ignored
    assert [index for index in range(-2, 10) if index in selection] == picked


def test_an_empty_job_selects_nothing() -> None:
    selection = Selection(0, retried_outcomes("skipped"))
    assert 0 not in selection


def cut(data: bytes, encoding: str, picked: set[int], chunk: int) -> tuple[bytes, list[int]]:
    out: list[bytes] = []
    sources = cut_rows((data[i:i + chunk] for i in range(0, len(data), chunk)), encoding, picked.__contains__,
                       out.append)
    return b"".join(out), list(sources)


# A header and four rows: a quoted field holding a line break, a comma and doubled quotes; a blank
# line (no row: indexes go on after it); a last row without a line break.
TEXT = ['id,name,note{nl}', 'a,"two{nl}lines, and ""quotes""",x{nl}', '{nl}', 'b,é ü,y{nl}', 'c,,z{nl}', 'd,last,w']
ROWS = {0: 1, 1: 3, 2: 4, 3: 5}  # data row index -> its piece of TEXT


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 20])
@pytest.mark.parametrize("newline", ["\r\n", "\n", "\r"])
@pytest.mark.parametrize(("encoding", "mark", "codec"), [
    ("utf-8", b"", "utf-8"), ("utf-8-sig", codecs.BOM_UTF8, "utf-8"), ("utf-16", codecs.BOM_UTF16_LE, "utf-16-le"),
    ("utf-16", codecs.BOM_UTF16_BE, "utf-16-be"), ("cp1252", b"", "cp1252"),
], ids=["utf-8", "utf-8-bom", "utf-16-le", "utf-16-be", "cp1252"])
def test_the_retry_file_is_the_header_and_the_picked_rows_as_sent(chunk: int, newline: str, encoding: str,
                                                                  mark: bytes, codec: str) -> None:
    pieces = [piece.format(nl=newline).encode(codec) for piece in TEXT]
    data = mark + b"".join(pieces)
    for picked in ({1, 3}, {0, 1, 2, 3}, set()):
        written, sources = cut(data, encoding, picked, chunk)
        assert written == mark + pieces[0] + b"".join(pieces[ROWS[i]] for i in sorted(picked))
        assert sources == sorted(picked)


def data_rows(data: bytes) -> list[list[str]]:
    """The rows a CSV job makes records of, in order (blank lines are none)."""
    reader = RowReader("utf-8")
    return (reader.feed(data) + reader.finish())[1:]


def test_a_picked_rows_index_is_the_index_its_record_had() -> None:
    data = b'h1,h2\r\n\r\n1,"a\r\nb"\r\n\r\n\r\n2,c\r\n3,d'
    rows = data_rows(data)
    assert len(rows) == 3
    for index, row in enumerate(rows):
        written, sources = cut(data, "utf-8", {index}, 4)
        assert sources == [index] and data_rows(written) == [row]


def batches_of(records: list[Any], sources: list[int] | None, **limits: int) -> list[dict[str, Any]]:
    emitted: list[dict[str, Any]] = []
    batcher = Batcher(job_id="j", tenant="t", record_type="resources", action="post", partitions=2,
                      batch_records=limits.get("batch_records", 1000), batch_bytes=limits.get("batch_bytes", 1 << 20),
                      emit=lambda partition, payload: emitted.append(orjson.loads(payload)), sources=sources)
    batcher.add(records, len(orjson.dumps(records)))
    batcher.close()
    return emitted


def test_a_retrys_batches_carry_each_records_source_index_beside_its_item() -> None:
    records = [{"type": "t", "external_id": str(n)} for n in range(50)]
    sources = [3 * n + 1 for n in range(50)]
    batches = batches_of(records, sources, batch_records=7)
    assert len(batches) > 2
    pairs = [(item[0], source) for batch in batches for item, source in zip(batch["items"], batch["sources"],
                                                                             strict=True)]
    assert sorted(pairs) == [(n, 3 * n + 1) for n in range(50)]


def test_a_halved_batch_keeps_its_source_indexes_with_its_items() -> None:
    big = "x" * (MAX_MESSAGE_BYTES // 3)
    records = [{"type": "t", "external_id": str(n), "attributes": {"big": big}} for n in range(6)]
    batches = batches_of(records, [10, 11, 12, 13, 14, 15], batch_records=1000)
    assert all(len(batch["items"]) < 3 for batch in batches)
    assert sorted((item[0], source) for batch in batches for item, source in zip(batch["items"], batch["sources"],
                                                                                  strict=True)) == [
        (n, 10 + n) for n in range(6)]


def test_a_batch_of_a_job_that_is_not_a_retry_has_no_sources() -> None:
    assert [batch["sources"] for batch in batches_of([{"type": "t"}], None)] == [None]
