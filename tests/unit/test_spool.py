"""BatchSpool: records routed to their owning partitions in numbered, size-limited batches."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from uuid import uuid4

import orjson
import pytest

from bulkjobs.api.spool import BatchSpool
from bulkjobs.domain.identity import (
    ACTIONS,
    RELATIONSHIPS,
    RESOURCES,
    derived_id,
    partition_of,
    route,
)
from bulkjobs.domain.records import Refused
from bulkjobs.kafka.batching import MAX_MESSAGE_BYTES, MAX_RECORD_DEPTH
from bulkjobs.kafka.topics import RecordBatch

TENANT = "tenant-a"
JOB = "job-1"


def make_spool(tmp_path: Path, *, record_type: str = RESOURCES, action: str = "post", partitions: int = 4,
               batch_records: int = 5, batch_bytes: int = 1 << 30) -> BatchSpool:
    return BatchSpool(job_id=JOB, tenant=TENANT, record_type=record_type, action=action, partitions=partitions,
                      batch_records=batch_records, batch_bytes=batch_bytes, directory=tmp_path / "spool")


def drain(spool: BatchSpool) -> list[tuple[int, RecordBatch]]:
    """Close the spool and read back every message, checking what holds for all of them."""
    spool.close()
    messages = []
    for partition, payload in spool:
        assert len(payload) <= MAX_MESSAGE_BYTES
        assert 0 <= partition < spool.partitions
        batch = RecordBatch(**orjson.loads(payload))
        assert (batch.job_id, batch.tenant, batch.type, batch.action) == (JOB, TENANT, spool.record_type, spool.action)
        assert batch.items, "no empty batches"
        messages.append((partition, batch))
    assert [batch.seq for _, batch in messages] == list(range(spool.batches))
    return messages


def all_items(messages: list[tuple[int, RecordBatch]]) -> dict[int, tuple[int, list[Any]]]:
    """index -> (partition, item); fails if a record is in more than one batch."""
    seen: dict[int, tuple[int, list[Any]]] = {}
    for partition, batch in messages:
        for item in batch.items:
            assert item[0] not in seen, f"record {item[0]} spooled twice"
            seen[item[0]] = (partition, item)
    return seen


def expected_partition(record_type: str, action: str, item: list[Any], record: Any, partitions: int) -> int:
    index, fresh_id = item[0], item[1]
    if isinstance(record, Refused):
        return index % partitions
    if fresh_id is not None:
        return partition_of(fresh_id, partitions)
    return route(record_type, action, TENANT, record, partitions, index, JOB)[0]


OBJ_IDS = [uuid4().hex for _ in range(6)] + ["foreign-id", derived_id(TENANT, "server", "e1")]


def records_for(record_type: str, action: str) -> list[Any]:
    """A mix of good and malformed records for one action, ~60 of them."""
    if record_type == RELATIONSHIPS and action == "post":
        good = [{"relationship_type": "r", "source": OBJ_IDS[i % 6], "target": OBJ_IDS[(i + 1) % 6]} for i in range(40)]
    elif action == "post":
        good = [{"type": "server", "external_id": f"e{i}"} for i in range(25)] + [{"type": "server"}] * 15
    elif action in ("external_id_set", "external_id_delete"):
        good = [{"type": t, "external_id": f"e{i}"} for i in range(20) for t in ("server", "switch")]
    elif action == "update":
        good = [{"id": OBJ_IDS[i % len(OBJ_IDS)], "attributes": {"i": i}} for i in range(40)]
    else:  # delete
        good = [OBJ_IDS[i % len(OBJ_IDS)] if i % 2 else {"id": OBJ_IDS[i % len(OBJ_IDS)]} for i in range(40)]
    bad = [None, 5, "", [1, 2], {}, {"id": 3}, {"type": "server", "external_id": 7},
           Refused("line is not valid JSON: {nope")] * 2
    mixed: list[Any] = []
    for i, record in enumerate(good):
        mixed.append(record)
        if i % 3 == 0 and bad:
            mixed.append(bad.pop())
    return mixed + bad


EVERY_ACTION = [pytest.param(record_type, action, id=f"{record_type}/{action}")
                for record_type, actions in ACTIONS.items() for action in sorted(actions)]


def text_of(record: Any) -> bytes:
    """The NDJSON line a record came from, as a client may write it (spaces, a CRLF line end)."""
    return b"{nope" if isinstance(record, Refused) else b"  " + orjson.dumps(record) + b" \r"


@pytest.mark.parametrize("with_texts", [False, True], ids=["parsed", "ndjson-texts"])
@pytest.mark.parametrize("partitions, batch_records", [(1, 1000), (3, 4), (8, 1), (8, 7)])
@pytest.mark.parametrize("record_type, action", EVERY_ACTION)
def test_every_record_lands_once_in_a_batch_of_its_owner(
    tmp_path: Path, record_type: str, action: str, partitions: int, batch_records: int, with_texts: bool
) -> None:
    records = records_for(record_type, action)
    spool = make_spool(tmp_path, record_type=record_type, action=action, partitions=partitions,
                       batch_records=batch_records)
    for start in range(0, len(records), 9):  # the body parser hands over chunks of records
        chunk = records[start:start + 9]
        spool.add(chunk, size=900, texts=[text_of(record) for record in chunk] if with_texts else None)

    messages = drain(spool)

    assert spool.records == len(records)
    items = all_items(messages)
    assert sorted(items) == list(range(len(records)))
    for index, (partition, item) in items.items():
        record = records[index]
        assert partition == expected_partition(record_type, action, item, record, partitions), item
        if isinstance(record, Refused):
            assert item == [index, None, None, "line is not valid JSON: {nope"]
        else:
            assert len(item) == 3 and item[2] == record


@pytest.mark.parametrize("partitions", [1, 3, 8])
@pytest.mark.parametrize("batch_records", [1, 4, 1000])
def test_batches_are_full_but_for_each_partitions_last(tmp_path: Path, partitions: int, batch_records: int) -> None:
    records = [{"type": "server", "external_id": f"e{i}"} for i in range(100)]
    spool = make_spool(tmp_path, partitions=partitions, batch_records=batch_records)
    spool.add(records, size=3000)

    messages = drain(spool)

    by_partition: dict[int, list[int]] = defaultdict(list)
    for partition, batch in messages:
        by_partition[partition].append(len(batch.items))
        indexes = [item[0] for item in batch.items]
        assert indexes == sorted(indexes)
    owners = Counter(route(RESOURCES, "post", TENANT, r, partitions, 0, JOB)[0] for r in records)
    assert {p: sum(sizes) for p, sizes in by_partition.items()} == dict(owners)
    for sizes in by_partition.values():
        assert all(size == batch_records for size in sizes[:-1])
        assert 1 <= sizes[-1] <= batch_records
    assert spool.batches == sum(-(-n // batch_records) for n in owners.values())


def test_batch_bytes_also_closes_a_batch(tmp_path: Path) -> None:
    spool = make_spool(tmp_path, partitions=1, batch_records=1000, batch_bytes=300)
    spool.add([{"type": "server", "external_id": f"e{i}"} for i in range(10)], size=1000)  # ~100 bytes each

    messages = drain(spool)

    assert [len(batch.items) for _, batch in messages] == [3, 3, 3, 1]


def test_seq_numbers_run_on_across_adds_and_partitions(tmp_path: Path) -> None:
    spool = make_spool(tmp_path, partitions=5, batch_records=2)
    for n in range(1, 8):
        spool.add([{"type": "t", "external_id": f"{n}-{i}"} for i in range(n)], size=50 * n)
    messages = drain(spool)  # drain checks seq == 0..batches-1 in file order
    assert len(messages) == spool.batches > 5
    assert spool.records == sum(range(1, 8))


def big(n_bytes: int, i: int = 0) -> dict[str, Any]:
    return {"type": "blob", "external_id": f"big-{i}", "attributes": {"payload": "x" * n_bytes}}


def test_an_oversized_record_is_refused_and_its_neighbours_kept(tmp_path: Path) -> None:
    spool = make_spool(tmp_path, partitions=1, batch_records=10)
    records = [{"type": "server"}, big(MAX_MESSAGE_BYTES + 10), {"type": "server", "external_id": "e2"}]
    spool.add(records, size=100)  # the estimate is far too low: only the encoded size can tell

    messages = drain(spool)

    items = all_items(messages)
    assert sorted(items) == [0, 1, 2]
    assert items[0][1][2] == records[0] and items[0][1][1] is not None
    assert items[2][1] == [2, None, records[2]]
    refused = items[1][1]
    size = len(orjson.dumps(records[1]))
    assert refused == [1, None, None, f"record is {size} bytes, over the limit of {MAX_MESSAGE_BYTES} bytes"]


def test_an_oversized_record_alone_in_its_batch(tmp_path: Path) -> None:
    spool = make_spool(tmp_path, partitions=2, batch_records=1)
    spool.add([big(2 * MAX_MESSAGE_BYTES)], size=2 * MAX_MESSAGE_BYTES)
    messages = drain(spool)
    assert len(messages) == 1
    assert messages[0][1].items[0][:3] == [0, None, None]


def test_records_that_fit_alone_but_not_together_are_split(tmp_path: Path) -> None:
    records = [big(300 * 1024, i) for i in range(7)]
    spool = make_spool(tmp_path, partitions=1, batch_records=100)
    spool.add(records, size=100)

    messages = drain(spool)

    assert len(messages) >= 3
    items = all_items(messages)
    assert sorted(items) == list(range(7))
    assert all(len(item) == 3 and item[2] == records[i] for i, (_, item) in items.items())


def test_invalid_lines_are_refused_items(tmp_path: Path) -> None:
    spool = make_spool(tmp_path, partitions=3, batch_records=100)
    spool.add([{"type": "server"}, Refused("line is not valid JSON: {bad"),
               Refused("line is not valid JSON: " + "x" * 200)], size=300)

    items = all_items(drain(spool))

    assert items[1] == (1 % 3, [1, None, None, "line is not valid JSON: {bad"])
    assert items[2] == (2 % 3, [2, None, None, "line is not valid JSON: " + "x" * 200])


def test_adding_nothing_spools_nothing(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    spool.add([], size=0)
    assert drain(spool) == []
    assert (spool.records, spool.batches) == (0, 0)


def test_fresh_ids_are_unique(tmp_path: Path) -> None:
    spool = make_spool(tmp_path, partitions=4, batch_records=10)
    spool.add([{"type": "server"}] * 200, size=4000)
    fresh = [item[1] for _, item in all_items(drain(spool)).values()]
    assert len(set(fresh)) == 200 and None not in fresh


def nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize("with_texts", [False, True], ids=["parsed", "ndjson-texts"])
@pytest.mark.parametrize("levels", [MAX_RECORD_DEPTH + 1, 500, 1023])
def test_a_record_nested_too_deep_to_encode_fails_alone(tmp_path: Path, levels: int, with_texts: bool) -> None:
    spool = make_spool(tmp_path, partitions=1, batch_records=100)
    records = [{"type": "server", "external_id": "e0"}, nested(levels), {"type": "server", "external_id": "e2"},
               nested(MAX_RECORD_DEPTH)]
    texts = [b'{"type": "server", "external_id": "e0"}', b'{"a":' * levels + b'"leaf"' + b"}" * levels,
             b'{"type":"server","external_id":"e2"}', b'{"a":' * MAX_RECORD_DEPTH + b'"leaf"' + b"}" * MAX_RECORD_DEPTH]
    spool.add(records, size=400, texts=texts if with_texts else None)

    items = all_items(drain(spool))

    assert sorted(items) == [0, 1, 2, 3]
    assert items[1][1] == [1, None, None, f"record is nested deeper than the limit of {MAX_RECORD_DEPTH} levels"]
    assert items[0][1][2] == records[0] and items[2][1][2] == records[2]
    assert items[3][1][2] == records[3]  # the deepest record that fits travels as it is
