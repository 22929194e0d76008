"""Dry runs: the flag as clients send it, the overlay of the index, and a dry run's batches
applied by the worker (results and counts as a real run's, nothing in the index changed)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bulkjobs.domain.changes import OP_CREATE, OP_DELETE, OP_PATCH, OP_REL_CREATE, OP_REL_DELETE
from bulkjobs.domain.counts import Counts
from bulkjobs.domain.dry_run import (
    Overlay,
    Overlays,
    check_dry_run,
    dry_run_from_text,
    requested_dry_run,
    would_be_ops,
)
from bulkjobs.domain.identity import RELATIONSHIPS, RESOURCES, derived_id, route
from bulkjobs.domain.jobs import Job, public_body, requested
from bulkjobs.domain.records import ObjectIndex, apply_batch
from bulkjobs.errors import BadRequest, InvalidField
from bulkjobs.kafka.batching import Batcher
from bulkjobs.kafka.topics import AppliedBatch, BatchParked, JobRequest, RecordBatch, RecordPart, decode, encode
from bulkjobs.kafka.topics import job_event_from as event_from
from bulkjobs.streams.state import ObjectState
from tests.unit.test_worker_orchestration import (
    FRESH,
    NAMES,
    TENANT,
    Worker,
    a_batch,
    batch_message,
    command,
    submitted,
)

OTHER = "other-tenant"
AT = "2026-01-01T00:00:00.000Z"
OBJ = "0123456789abcdef0123456789abcdef"
SRC = "aaaaaaaa000000000000000000000001"
DST = "bbbbbbbb000000000000000000000002"
REL = "cccccccc000000000000000000000003"
SRV1 = derived_id(TENANT, "server", "srv-1")


# --- the flag -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False, None])
def test_a_boolean_or_no_flag_is_taken(value: bool | None) -> None:
    assert check_dry_run(value) is value


@pytest.mark.parametrize("value", ["true", 1, 0, "", [], {}, 1.0])
def test_a_flag_that_is_not_a_boolean_is_a_400(value: Any) -> None:
    with pytest.raises(InvalidField) as caught:
        check_dry_run(value)
    assert caught.value.status == 400 and caught.value.details == {"field": "dry_run"}


@pytest.mark.parametrize("text, value", [("true", True), ("false", False)])
def test_the_flag_as_text_is_true_or_false(text: str, value: bool) -> None:
    assert dry_run_from_text(text) is value


@pytest.mark.parametrize("text", ["True", "1", "yes", "", "truex", "x" * 1000])
def test_other_text_is_a_400_quoting_it_short(text: str) -> None:
    with pytest.raises(InvalidField) as caught:
        dry_run_from_text(text)
    assert len(caught.value.message) < 200


@pytest.mark.parametrize("given, expected", [
    ((None, None), False), ((True, None), True), ((None, True), True), ((False, None), False),
    ((True, True), True), ((False, False), False),
])
def test_the_request_is_a_dry_run_when_any_place_says_so(given: tuple[bool | None, ...], expected: bool) -> None:
    assert requested_dry_run(*given) is expected


@pytest.mark.parametrize("given", [(True, False), (False, True)])
def test_places_that_disagree_are_a_400(given: tuple[bool, bool]) -> None:
    with pytest.raises(BadRequest) as caught:
        requested_dry_run(*given)
    assert caught.value.code == "conflicting_dry_run"


@pytest.mark.parametrize("details, shown", [(None, False), ({"dry_run": True}, True), ({"operation": "upsert"}, False)])
def test_the_job_body_shows_dry_run(details: dict[str, Any] | None, shown: bool) -> None:
    job = Job(id="j", details=details)
    assert job.dry_run is shown and public_body(job, retention=0)["dry_run"] is shown


def test_a_requested_job_keeps_its_dry_run() -> None:
    job = requested(Job(id="j"), tenant=TENANT, type=RESOURCES, action="post", description=None, parts=1,
                    created_at=AT, dry_run=True)
    assert job is not None and job.dry_run


@pytest.mark.parametrize("value", ["true", 1, None])
def test_a_job_request_whose_dry_run_is_not_a_boolean_is_refused(value: Any) -> None:
    request = {"kind": "request", "job_id": "j-1", "tenant": TENANT, "type": RESOURCES, "action": "post",
               "parts": 1, "dry_run": value}
    with pytest.raises(ValueError, match="'dry_run' must be a boolean"):
        event_from(b"j-1", encode(request))


@pytest.mark.parametrize("dry_run", [True, False])
def test_the_batcher_marks_its_batches(dry_run: bool) -> None:
    out: list[bytes] = []
    batcher = Batcher(job_id="j", tenant=TENANT, record_type=RESOURCES, action="post", partitions=2,
                      batch_records=10, batch_bytes=10_000, emit=lambda _, payload: out.append(payload),
                      dry_run=dry_run)
    batcher.add([{"type": "server"}] * 3, 60)
    batcher.close()
    assert out and all(RecordBatch(**decode(payload)).dry_run is dry_run for payload in out)


# --- the overlay ----------------------------------------------------------------------------------


def items(record_type: str, action: str, recs: list[Any], start: int = 0) -> list[list[Any]]:
    return [[i, route(record_type, action, TENANT, rec, 8, i, "job-1")[1], rec] for i, rec in enumerate(recs, start)]


def test_the_overlay_reads_through_to_the_index_and_never_writes_it() -> None:
    base = ObjectIndex(objects={OBJ: TENANT, SRC: OTHER})
    overlay = Overlay(base)
    assert overlay.objects.get(OBJ) == TENANT and SRC in overlay.objects and DST not in overlay.objects
    overlay.apply_op([OP_DELETE, OBJ])
    overlay.apply_op([OP_CREATE, DST, TENANT, "server", None, {}, AT])
    overlay.apply_op([OP_PATCH, SRC, {"a": 1}, AT])
    overlay.apply_op([OP_REL_CREATE, REL, TENANT, "runs_on", SRC, DST, AT])
    assert OBJ not in overlay.objects and overlay.objects.get(DST) == TENANT and REL in overlay.relationships
    overlay.apply_op([OP_REL_DELETE, REL])
    assert REL not in overlay.relationships
    assert base == ObjectIndex(objects={OBJ: TENANT, SRC: OTHER})
    assert len(overlay) == 3  # the ids it touched: what it holds in memory


def test_the_overlay_sees_the_index_change_under_untouched_ids() -> None:
    """What a dry run cannot foresee: another job changing the index meanwhile shows through."""
    base = ObjectIndex()
    overlay = Overlay(base)
    base.objects[OBJ] = TENANT
    assert OBJ in overlay.objects


# (record type, action, objects and relationships the index holds, records of one dry run)
MIXED = [
    pytest.param(RESOURCES, "post", {SRV1: TENANT}, [
        {"type": "server", "external_id": "srv-1"}, {"type": "server", "external_id": "srv-2"},
        {"type": "server", "external_id": "srv-2"}, {"type": "server"}, 42,
    ], id="post: existing, new, the new one again, no external id, not an object"),
    pytest.param(RESOURCES, "external_id_set", {SRV1: TENANT}, [
        {"type": "server", "external_id": "srv-1"}, {"type": "server", "external_id": "srv-3"},
        {"type": "server", "external_id": "srv-3", "attributes": {"a": 1}}, {"type": "server"},
    ], id="upsert: update, create, then update what it created, no external id"),
    pytest.param(RESOURCES, "external_id_delete", {SRV1: TENANT}, [
        {"type": "server", "external_id": "srv-1"}, {"type": "server", "external_id": "srv-1"},
        {"type": "server", "external_id": "srv-9"},
    ], id="delete by external id: existing, again, unknown"),
    pytest.param(RESOURCES, "delete", {OBJ: TENANT, SRC: OTHER}, [OBJ, OBJ, SRC, DST],
                 id="delete: existing, again, another tenant's, unknown"),
    pytest.param(RESOURCES, "update", {OBJ: TENANT}, [
        {"id": OBJ, "attributes": {"a": 1}}, {"id": DST, "attributes": {}}, {"id": OBJ},
    ], id="update: existing, unknown, no attributes"),
    pytest.param(RELATIONSHIPS, "post", {SRC: TENANT, DST: TENANT, OBJ: OTHER}, [
        {"relationship_type": "feeds", "source": SRC, "target": DST},
        {"relationship_type": "feeds", "source": SRC, "target": OBJ},
        {"relationship_type": "feeds", "source": SRC},
    ], id="relationships post: both ends, another tenant's end, no target"),
    pytest.param(RELATIONSHIPS, "delete", {REL: TENANT}, [REL, REL, SRC],
                 id="relationships delete: existing, again, unknown"),
]


def index_of(ids: dict[str, str]) -> ObjectIndex:
    """The index holding ``ids`` (those starting with "c" are relationships)."""
    return ObjectIndex(objects={k: v for k, v in ids.items() if not k.startswith("c")},
                       relationships={k: v for k, v in ids.items() if k.startswith("c")})


@pytest.mark.parametrize("record_type, action, ids, recs", MIXED)
def test_a_dry_run_has_the_outcomes_of_the_real_run_and_leaves_the_index(
        record_type: str, action: str, ids: dict[str, str], recs: list[Any]) -> None:
    """Batch by batch (the records of a job seeing each other's effects across batches too)."""
    real, base = index_of(ids), index_of(ids)
    overlay = Overlay(base)
    for start in range(len(recs)):  # one record a batch
        batch = items(record_type, action, recs[start:start + 1], start)
        expected = apply_batch(record_type, action, TENANT, copy.deepcopy(batch), real, AT)
        dry = apply_batch(record_type, action, TENANT, batch, overlay, AT)
        assert (dry.results, dry.counts) == (expected.results, expected.counts)
    whole = apply_batch(record_type, action, TENANT, items(record_type, action, recs), Overlay(index_of(ids)), AT)
    assert whole.counts.failed > 0 and whole.counts.processed == len(recs)  # the cases are mixed
    assert base == index_of(ids)


def test_would_be_ops_keep_only_what_an_overlay_needs() -> None:
    ops = [[OP_CREATE, OBJ, TENANT, "server", "x", {"big": "attributes"}, AT], [OP_PATCH, OBJ, {"a": 1}, AT],
           [OP_DELETE, SRC], [OP_REL_CREATE, REL, TENANT, "feeds", SRC, DST, AT], [OP_REL_DELETE, REL]]
    assert would_be_ops(ops) == [[OP_CREATE, OBJ, TENANT], [OP_DELETE, SRC], [OP_REL_CREATE, REL, TENANT],
                                 [OP_REL_DELETE, REL]]


def test_an_overlay_replayed_from_its_would_be_ops_sees_what_the_original_saw() -> None:
    base = ObjectIndex(objects={SRV1: TENANT})
    recs = [{"type": "server", "external_id": "srv-1"}, {"type": "server", "external_id": "srv-2"}]
    overlays = Overlays(lambda partition: base)
    applied = apply_batch(RESOURCES, "external_id_delete", TENANT, items(RESOURCES, "external_id_delete", recs[:1]),
                          overlays.of("job-1", 3), AT)
    created = apply_batch(RESOURCES, "external_id_set", TENANT, items(RESOURCES, "external_id_set", recs[1:]),
                          overlays.of("job-1", 3), AT)
    rebuilt = Overlays(lambda partition: base)
    rebuilt.replay("job-1", 3, would_be_ops(applied.ops + created.ops))
    assert rebuilt.of("job-1", 3).objects.changed == overlays.of("job-1", 3).objects.changed
    assert base.objects == {SRV1: TENANT}


def test_overlays_are_per_job_and_partition_and_dropped_when_the_job_ends_or_the_partition_goes() -> None:
    overlays = Overlays(lambda partition: ObjectIndex())
    first = overlays.of("job-1", 0)
    assert overlays.of("job-1", 0) is first and overlays.of("job-1", 1) is not first
    overlays.of("job-2", 0)
    assert len(overlays) == 3
    overlays.drop_partitions({1})
    assert len(overlays) == 2
    overlays.drop_ended(lambda job_id: job_id == "job-1")
    assert len(overlays) == 1 and overlays.of("job-2", 0) is not None


# --- a dry run's batches in the worker -------------------------------------------------------------


def external_batch(seq: int, *external_ids: str, action: str = "post") -> RecordBatch:
    recs = [{"type": "server", "external_id": external_id} for external_id in external_ids]
    return RecordBatch(job_id="job-1", tenant=TENANT, type=RESOURCES, action=action, seq=seq,
                       items=items(RESOURCES, action, recs, seq * 10), dry_run=True)


async def test_a_dry_run_batch_publishes_results_and_counts_without_ops_and_leaves_the_index() -> None:
    worker = Worker()
    await worker.applier.handle(batch_message(a_batch(dry_run=True)))
    (_, _, applied, _, _), (_, _, done, _, _) = worker.published()
    assert applied["dry_run"] is True and applied["ops"] == []
    assert applied["results"] == [[0, True, FRESH, None, "created"]]
    assert applied["would_be"] == [[OP_CREATE, FRESH, TENANT]]
    assert done["counts"] == applied["counts"] == Counts(processed=1, created=1).to_dict()
    assert no_ids(worker.objects)
    assert worker.objects.applied_counts(2, "job-1", 0) == Counts(processed=1, created=1)


async def test_later_batches_of_a_dry_run_see_the_earlier_ones_but_other_jobs_do_not() -> None:
    worker = Worker()
    await worker.applier.handle(batch_message(external_batch(0, "srv-1"), offset=1))
    await worker.applier.handle(batch_message(external_batch(1, "srv-1"), offset=2))
    await worker.applier.handle(batch_message(replace_job(external_batch(0, "srv-1"), "job-2"), offset=3))
    outcomes = [effect[2]["results"][0][4] for effect in worker.published() if effect[2].get("results")]
    assert outcomes == ["created", "failed", "created"]
    assert no_ids(worker.objects)


def no_ids(objects: ObjectState) -> bool:
    """Whether no partition's index holds an id: the dry runs changed nothing."""
    return objects.live_ids() == (0, 0)


def replace_job(batch: RecordBatch, job_id: str) -> RecordBatch:
    return RecordBatch(**{**batch.__dict__, "job_id": job_id})


async def test_a_redelivered_dry_run_batch_only_sends_its_batch_done_again() -> None:
    worker = Worker()
    await worker.applier.handle(batch_message(external_batch(0, "srv-1")))
    first_done = worker.published()[-1]
    worker.effects.clear()
    await worker.applier.handle(batch_message(external_batch(0, "srv-1")))
    assert worker.published() == [first_done]


async def test_a_new_owner_rebuilds_the_dry_run_overlay_from_the_changes_topic() -> None:
    before = Worker()
    await before.applier.handle(batch_message(external_batch(0, "srv-1")))
    applied = AppliedBatch(**before.published()[0][2])
    after = Worker()
    after.tails["changes"].deliver(2, 50, encode(applied))
    assert no_ids(after.objects)  # a dry run's ops never reach the index
    await after.applier.handle(batch_message(external_batch(1, "srv-1"), offset=8))
    [applied_again] = [effect[2] for effect in after.published() if effect[2].get("results")]
    assert applied_again["results"][0][4] == "failed"  # it saw the first batch's would-be create


@pytest.mark.parametrize("next_batch", ["a dry run's", "a real job's"])
async def test_the_overlay_of_an_ended_dry_run_is_dropped_with_the_next_batch(next_batch: str) -> None:
    worker = Worker()
    await worker.applier.handle(batch_message(external_batch(0, "srv-1")))
    worker.job_states.put(Job(id="job-1", tenant=TENANT, status="partially_succeeded"), 0)
    assert len(worker.objects.dry_runs) == 1
    batch = replace_job(external_batch(0, "srv-1"), "job-2")
    await worker.applier.handle(batch_message(batch if next_batch == "a dry run's" else a_batch("job-3")))
    assert len(worker.objects.dry_runs) == (1 if next_batch == "a dry run's" else 0)
    assert worker.objects.dry_runs.of("job-1", 2).objects.changed == {}  # made anew, empty


async def test_a_dry_run_overlay_goes_with_its_partition() -> None:
    worker = Worker()
    await worker.applier.handle(batch_message(external_batch(0, "srv-1"), partition=2))
    worker.objects.revoke({2})
    worker.objects.assign({0, 1})
    assert len(worker.objects.dry_runs) == 0


async def test_the_runs_of_a_dry_run_definition_are_dry_runs() -> None:
    worker = Worker()
    await worker.track(submitted("def-1", schedule={"immediately": True}, details={"dry_run": True}))
    worker.parked[(2, 7)] = encode(a_batch("def-1", hold=True, dry_run=True))
    await worker.track(BatchParked(job_id="def-1", seq=0, partition=2, offset=7))
    worker.effects.clear()
    await worker.track(command("fire", "def-1", due=AT))
    (_, _, run, _, _), (_, _, copy, _, _), _ = worker.published()
    assert run["details"] == {"dry_run": True, "scheduled_for": AT}
    assert (copy["job_id"], copy["hold"], copy["dry_run"]) == ("def-1r0", False, True)


async def test_a_job_produced_to_kafka_as_a_dry_run_is_routed_into_dry_run_batches() -> None:
    worker = Worker()
    await worker.track(JobRequest(job_id="job-1", tenant=TENANT, type=RESOURCES, action="post", parts=1,
                                  dry_run=True))
    await worker.track(RecordPart(job_id="job-1", part=0, records=[{"type": "server"}] * 3))
    batches = [effect[2] for effect in worker.published() if effect[1] == NAMES.batches]
    assert batches and all(batch["dry_run"] for batch in batches)
    assert worker.statuses()[-1].dry_run
