"""The results the store writes, read back as the API reads them: a plain success, a failure
with its errors and kept record, one without a body, and a retry's results with their sources,
mixed in one batch or one poll, and written again (a replay) without change; and any page of a
job's results, however its records were routed to partitions and cut into batches."""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkjobs.domain.changes import Outcome
from bulkjobs.kafka.topics import encode
from bulkjobs.store import sqlite
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
    await writer.write(map(encode, batches), [], [])
    await writer.write(map(encode, batches), [], [])  # a replay changes nothing
    assert await reader.results(JOB, 100, 0) == [expected(result) for result in RESULTS]
    assert await reader.results(JOB, 100, 0, failed_only=True) == [expected(RESULTS[1]), expected(RESULTS[3])]
    assert await reader.results(JOB, 100, 0, outcome="updated") == [expected(RESULTS[2])]
    assert await reader.outcomes(JOB, 1, 2) == [(1, "failed"), (2, "updated")]
    assert await reader.failed_records(JOB, frozenset({"failed", "skipped"}), 0, 10) == [
        (1, b'{"external_id":"e1"}')]


async def test_a_retrys_results_keep_their_source_indexes(view: tuple[ViewWriter, ViewReader]) -> None:
    writer, reader = view
    retried = [[0, True, "0" * 32, None, "created"], [1, False, None, ERROR, "failed", {"external_id": "e1"}]]
    await writer.write([encode(applied(JOB, 0, RESULTS)), encode(applied(RETRY, 0, retried, sources=[1, 3]))], [], [])
    assert await reader.results(RETRY, 100, 0) == [expected(retried[0], 1), expected(retried[1], 3)]
    assert await reader.results(JOB, 1, 4) == [expected(RESULTS[4])]


def result_of(index: int, outcome: Outcome) -> list[Any]:
    """A result as a worker writes it: a failure keeps its record's body when its index is even."""
    if outcome in (Outcome.FAILED, Outcome.SKIPPED):
        body = [{"n": index}] if outcome == Outcome.FAILED and index % 2 == 0 else []
        return [index, False, None, ERROR, str(outcome), *body]
    return [index, True, f"{index:032x}", None, str(outcome)]


@st.composite
def routed_jobs(draw: st.DrawFn) -> tuple[list[list[Any]], list[list[dict[str, Any]]]]:
    """A job's results, and its applied batches as polls of the store: each record routed to a
    partition, each partition's records cut into batches in index order (as ``Batcher`` does),
    the batches arriving in any order, some twice; with or without per-outcome counts."""
    outcomes = draw(st.lists(st.sampled_from(list(Outcome)), max_size=60))
    partitions, per_batch = draw(st.integers(1, 4)), draw(st.integers(1, 7))
    results = [result_of(index, outcome) for index, outcome in enumerate(outcomes)]
    owned: list[list[list[Any]]] = [[] for _ in range(partitions)]
    for result in results:
        owned[draw(st.integers(0, partitions - 1))].append(result)
    tallied = draw(st.booleans())
    batches = []
    for share in owned:
        for start in range(0, len(share), per_batch):
            part = share[start:start + per_batch]
            counts = Counter(result[4] for result in part) if tallied else {}
            batches.append({**applied(JOB, len(batches), part), "counts": {"processed": len(part), **counts}})
    arrivals = draw(st.permutations(batches)) + draw(st.lists(st.sampled_from(batches), max_size=3) if batches
                                                      else st.just([]))
    cuts = sorted(draw(st.lists(st.integers(0, len(arrivals)), max_size=3)))
    polls = [arrivals[start:end] for start, end in zip([0, *cuts], [*cuts, len(arrivals)], strict=True)]
    return results, polls


@given(routed_jobs(), st.integers(0, 62), st.integers(1, 64), st.none() | st.sampled_from(list(Outcome)),
       st.booleans())
def test_a_page_of_results_is_the_jobs_results_in_record_order_however_they_were_routed(
        job: tuple[list[list[Any]], list[list[dict[str, Any]]]], start: int, limit: int, outcome: Outcome | None,
        failed_only: bool) -> None:
    results, polls = job

    async def read() -> tuple[Any, ...]:
        with tempfile.TemporaryDirectory() as directory:
            db = await connect(Path(directory) / "view.db")
            try:
                writer, reader = ViewWriter(db), ViewReader(db)
                for poll in polls:
                    await writer.write(map(encode, poll), [], [])
                return (await reader.results(JOB, limit, start, failed_only=failed_only, outcome=outcome),
                        await reader.outcomes(JOB, start, limit),
                        await reader.failed_records(JOB, frozenset({Outcome.FAILED}), start, limit))
            finally:
                await db.close()

    page, outcomes, records = asyncio.run(read())
    after = results[start:]
    assert page == [expected(result) for result in after if (outcome is None or result[4] == outcome)
                    and not (failed_only and result[1])][:limit]
    assert outcomes == [(result[0], result[4]) for result in after][:limit]
    assert records == [(result[0], orjson.dumps(result[5])) for result in after if len(result) > 5][:limit]


async def test_a_view_of_the_version_that_kept_a_row_per_result_is_made_again(tmp_path: Path) -> None:
    """A view of schema version 10 (a ``results`` table, no packed results) is dropped as a
    whole when opened, so the store rebuilds it from the topics, and its results read again."""
    old = sqlite.library.connect(str(tmp_path / "view.db"))
    old.executescript("CREATE TABLE job_batches (job_id TEXT, seq INTEGER, records INTEGER, PRIMARY KEY (job_id, seq));"
                      "CREATE TABLE results (job_id TEXT, idx INTEGER, PRIMARY KEY (job_id, idx));"
                      "CREATE TABLE positions (topic TEXT, partition INTEGER, next_offset INTEGER);"
                      f"INSERT INTO job_batches VALUES ('{JOB}', 0, 5); INSERT INTO results VALUES ('{JOB}', 0);"
                      "INSERT INTO positions VALUES ('bulkjobs-changes', 0, 7); PRAGMA user_version = 10;")
    old.close()
    db = await connect(tmp_path / "view.db")
    try:
        tables = {row[0] for row in await db.execute_fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "results" not in tables and "job_batches" in tables
        assert list(await db.execute_fetchall("SELECT * FROM positions")) == []  # read every topic again
        writer, reader = ViewWriter(db), ViewReader(db)
        assert await reader.results(JOB, 100, 0) == []
        await writer.write([encode(applied(JOB, 0, RESULTS))], [], [])
        assert await reader.results(JOB, 100, 0) == [expected(result) for result in RESULTS]
    finally:
        await db.close()
