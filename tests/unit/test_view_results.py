"""The results the store writes, read back as the API reads them: a plain success, a failure
with its errors and kept record, one without a body, and a retry's results with their sources,
mixed in one batch or one poll, and written again (a replay) without change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bulkjobs.store.reader import ViewReader
from bulkjobs.store.schema import connect
from bulkjobs.store.writer import ViewWriter

AT = "2026-01-01T00:00:00.000Z"
JOB, RETRY = "a" * 32, "b" * 32
ERROR = [{"code": "NotFound", "status": "404", "title": "Not Found", "detail": "gone"}]
RESULTS = [
    [0, True, "0" * 32, None, "created"],
    [1, False, None, ERROR, "failed", {"external_id": "e1"}],  # failed on its owner: its body is kept
    [2, True, "2" * 32, [], "updated"],  # no errors, as an empty list
    [3, False, None, ERROR, "skipped"],  # refused before its owner: no body
    [4, True, "4" * 32, None, "deleted"],
]


def applied(job_id: str, seq: int, results: list[list[Any]], sources: list[int] | None = None) -> dict[str, Any]:
    batch = {"job_id": job_id, "seq": seq, "at": AT, "counts": {"processed": len(results)}, "ops": [],
             "results": results}
    return batch if sources is None else {**batch, "sources": sources}


@pytest.fixture
async def view(tmp_path: Path) -> AsyncIterator[tuple[ViewWriter, ViewReader]]:
    """The store's writer and the API's reader of one view, each on its own connection."""
    written, read = await connect(tmp_path / "view.db"), await connect(tmp_path / "view.db")
    try:
        yield ViewWriter(written), ViewReader(read)
    finally:
        await written.close()
        await read.close()


def expected(result: list[Any], source: int | None = None) -> dict[str, Any]:
    return {"index": result[0], "success": result[1], "status": result[4], "id": result[2],
            "errors": result[3] or [], "source_index": source}


@pytest.mark.parametrize("per_batch", [1, 2, 5])
async def test_results_read_back_as_written_however_they_are_batched(view: tuple[ViewWriter, ViewReader],
                                                                    per_batch: int) -> None:
    writer, reader = view
    batches = [applied(JOB, seq, RESULTS[start:start + per_batch])
               for seq, start in enumerate(range(0, len(RESULTS), per_batch))]
    await writer.write(batches, [], [])
    await writer.write(batches, [], [])  # a replay changes nothing
    assert await reader.results(JOB, 100, 0) == [expected(result) for result in RESULTS]
    assert await reader.results(JOB, 100, 0, failed_only=True) == [expected(RESULTS[1]), expected(RESULTS[3])]
    assert await reader.results(JOB, 100, 0, outcome="updated") == [expected(RESULTS[2])]
    assert await reader.outcomes(JOB, 1, 2) == [(1, "failed"), (2, "updated")]
    assert await reader.failed_records(JOB, frozenset({"failed", "skipped"}), 0, 10) == [
        (1, b'{"external_id":"e1"}')]


async def test_a_retrys_results_keep_their_source_indexes(view: tuple[ViewWriter, ViewReader]) -> None:
    writer, reader = view
    retried = [[0, True, "0" * 32, None, "created"], [1, False, None, ERROR, "failed", {"external_id": "e1"}]]
    await writer.write([applied(JOB, 0, RESULTS), applied(RETRY, 0, retried, sources=[1, 3])], [], [])
    assert await reader.results(RETRY, 100, 0) == [expected(retried[0], 1), expected(retried[1], 3)]
    assert await reader.results(JOB, 1, 4) == [expected(RESULTS[4])]
