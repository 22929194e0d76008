"""apply_batch: every (type, action) rule, bad records, result shape, counts and the index."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import orjson
import pytest

from bulkjobs.domain import records
from bulkjobs.domain.changes import (
    OP_CREATE,
    OP_DELETE,
    OP_PATCH,
    OP_REL_CREATE,
    OP_REL_DELETE,
    RESULT_OUTCOME,
    Outcome,
)
from bulkjobs.domain.counts import Counts
from bulkjobs.domain.identity import (
    ACTIONS,
    RELATIONSHIPS,
    RESOURCES,
    derived_id,
    route,
)
from bulkjobs.domain.records import (
    ObjectIndex,
    apply_batch,
    fail_all,
)

TENANT = "tenant-a"
OTHER = "tenant-b"
AT = "2024-05-01T12:00:00Z"
PARTITIONS = 8


def items_for(record_type: str, action: str, recs: list[Any], tenant: str = TENANT, start: int = 0) -> list[list[Any]]:
    """Items as the API routes them: [index, fresh_id | None, record]."""
    items = []
    for i, rec in enumerate(recs, start):
        _, fresh_id = route(record_type, action, tenant, rec, PARTITIONS, i, "job-1")
        items.append([i, fresh_id, rec])
    return items


def run(record_type: str, action: str, recs: list[Any], index: ObjectIndex | None = None,
        tenant: str = TENANT, start: int = 0) -> tuple[records.AppliedRecords, ObjectIndex]:
    index = ObjectIndex() if index is None else index
    outcome = apply_batch(record_type, action, tenant, items_for(record_type, action, recs, tenant, start), index, AT)
    return outcome, index


def error_of(result: list[Any], outcome: str = "failed") -> dict[str, str]:
    index, success, object_id, errors, counted = result[:5]
    assert success is False and object_id is None and counted == outcome
    assert isinstance(errors, list) and len(errors) == 1
    return errors[0]


def assert_ok(result: list[Any], expected_index: int, expected_id: str, counted: str = "created") -> None:
    assert result == [expected_index, True, expected_id, None, counted]


def with_objects(*owned: tuple[str, str]) -> ObjectIndex:
    return ObjectIndex(objects=dict(owned))


# --- every (type, action) pair ------------------------------------------------------------------

OBJ = "0123456789abcdef0123456789abcdef"
SRC = "aaaaaaaa000000000000000000000001"
DST = "bbbbbbbb000000000000000000000002"
REL = "cccccccc000000000000000000000003"
SRV1 = derived_id(TENANT, "server", "srv-1")


def _every_action() -> list[Any]:
    """(record_type, action, index factory, record, outcome, op type, counts of the same record again)."""
    return [
        pytest.param(RESOURCES, "post", ObjectIndex, {"type": "server", "attributes": {"a": 1}},
                     "created", OP_CREATE, Counts(processed=1, created=1), id="resources/post"),
        pytest.param(RESOURCES, "post", ObjectIndex, {"type": "server", "external_id": "srv-1"},
                     "created", OP_CREATE, Counts(processed=1, failed=1), id="resources/post-external-id"),
        pytest.param(RESOURCES, "update", lambda: with_objects((OBJ, TENANT)), {"id": OBJ, "attributes": {"a": 2}},
                     "updated", OP_PATCH, Counts(processed=1, updated=1), id="resources/update"),
        pytest.param(RESOURCES, "delete", lambda: with_objects((OBJ, TENANT)), OBJ,
                     "deleted", OP_DELETE, Counts(processed=1, failed=1), id="resources/delete"),
        pytest.param(RESOURCES, "external_id_set", ObjectIndex,
                     {"type": "server", "external_id": "srv-1", "attributes": {}},
                     "created", OP_CREATE, Counts(processed=1, updated=1), id="resources/external_id_set"),
        pytest.param(RESOURCES, "external_id_update", lambda: with_objects((SRV1, TENANT)),
                     {"type": "server", "external_id": "srv-1", "attributes": {"a": 3}},
                     "updated", OP_PATCH, Counts(processed=1, updated=1), id="resources/external_id_update"),
        pytest.param(RESOURCES, "external_id_delete", lambda: with_objects((SRV1, TENANT)),
                     {"type": "server", "external_id": "srv-1"},
                     "deleted", OP_DELETE, Counts(processed=1, failed=1), id="resources/external_id_delete"),
        pytest.param(RELATIONSHIPS, "post", lambda: with_objects((SRC, TENANT), (DST, TENANT)),
                     {"relationship_type": "runs_on", "source": SRC, "target": DST},
                     "created", OP_REL_CREATE, Counts(processed=1, created=1), id="relationships/post"),
        pytest.param(RELATIONSHIPS, "delete", lambda: ObjectIndex(relationships={REL: TENANT}), REL,
                     "deleted", OP_REL_DELETE, Counts(processed=1, failed=1), id="relationships/delete"),
    ]


EVERY_ACTION = _every_action()


def test_cases_cover_every_action_and_every_action_has_a_handler() -> None:
    every_pair = {(record_type, action) for record_type, actions in ACTIONS.items() for action in actions}
    assert {(p.values[0], p.values[1]) for p in EVERY_ACTION} == every_pair
    assert set(records.HANDLERS) == every_pair


@pytest.mark.parametrize("record_type, action, make_index, record, counted, op_type, again_counts", EVERY_ACTION)
def test_every_action_applies_then_the_same_record_again(
    record_type: str, action: str, make_index: Any, record: Any, counted: str, op_type: str, again_counts: Counts
) -> None:
    index = make_index()
    outcome, _ = run(record_type, action, [record], index)

    assert len(outcome.results) == 1
    index_, success, object_id, errors, outcome_counted = outcome.results[0]
    assert (index_, success, errors, outcome_counted) == (0, True, None, counted)
    assert isinstance(object_id, str) and len(object_id) == 32
    assert [op[0] for op in outcome.ops] == [op_type]
    assert outcome.ops[0][1] == object_id
    assert outcome.counts == Counts(**{"processed": 1, counted: 1})

    # The index moved with the op: a repeated delete or external-id post fails, an upsert
    # updates, and a post without external id gets another fresh id and creates again.
    again, _ = run(record_type, action, [record], index)
    assert again.counts == again_counts
    if again_counts.failed:
        assert error_of(again.results[0])["status"] in {"404", "422"}


# --- resources / post -------------------------------------------------------------------------

def test_post_without_external_id_uses_the_fresh_id_from_the_router() -> None:
    rec = {"type": "server", "attributes": {"name": "web-1"}}
    fresh = uuid4().hex
    index = ObjectIndex()

    outcome = apply_batch(RESOURCES, "post", TENANT, [[0, fresh, rec]], index, AT)

    assert_ok(outcome.results[0], 0, fresh)
    assert outcome.ops == [[OP_CREATE, fresh, TENANT, "server", None, {"name": "web-1"}, AT]]
    assert index.objects == {fresh: TENANT}
    assert outcome.counts == Counts(processed=1, created=1)


def test_post_without_external_id_or_fresh_id_is_invalid() -> None:
    outcome = apply_batch(RESOURCES, "post", TENANT, [[0, None, {"type": "server"}]], ObjectIndex(), AT)
    error = error_of(outcome.results[0])
    assert error["status"] == "400" and "router" in error["detail"]


def test_post_without_attributes_creates_with_empty_attributes() -> None:
    outcome, _ = run(RESOURCES, "post", [{"type": "server"}])
    assert outcome.ops[0][5] == {}


def test_post_with_external_id_uses_the_derived_id() -> None:
    rec = {"type": "server", "external_id": "srv-1", "attributes": {"x": 1}}
    outcome, index = run(RESOURCES, "post", [rec])

    assert_ok(outcome.results[0], 0, SRV1)
    assert outcome.ops == [[OP_CREATE, SRV1, TENANT, "server", "srv-1", {"x": 1}, AT]]
    assert index.objects == {SRV1: TENANT}


def test_second_post_of_the_same_external_id_fails_with_422_naming_it() -> None:
    rec = {"type": "server", "external_id": "srv-1"}
    _, index = run(RESOURCES, "post", [rec])
    before = dict(index.objects)

    outcome, _ = run(RESOURCES, "post", [rec], index)

    error = error_of(outcome.results[0])
    assert error["status"] == "422"
    assert error["code"] == "UnprocessableEntity"
    assert "'srv-1'" in error["detail"] and "'server'" in error["detail"]
    assert outcome.ops == []
    assert outcome.counts == Counts(processed=1, failed=1)
    assert index.objects == before


def test_same_external_id_twice_in_one_batch_creates_once() -> None:
    rec = {"type": "server", "external_id": "dup"}
    outcome, index = run(RESOURCES, "post", [rec, dict(rec, attributes={"again": True})])

    expected_id = derived_id(TENANT, "server", "dup")
    assert_ok(outcome.results[0], 0, expected_id)
    assert error_of(outcome.results[1])["status"] == "422"
    assert len(outcome.ops) == 1
    assert outcome.counts == Counts(processed=2, created=1, failed=1)
    assert index.objects == {expected_id: TENANT}


def test_same_external_id_in_another_tenant_is_another_object() -> None:
    rec = {"type": "server", "external_id": "shared"}
    index = ObjectIndex()
    run(RESOURCES, "post", [rec], index, tenant=TENANT)
    outcome, _ = run(RESOURCES, "post", [rec], index, tenant=OTHER)

    assert outcome.counts == Counts(processed=1, created=1)
    assert index.objects == {derived_id(TENANT, "server", "shared"): TENANT,
                             derived_id(OTHER, "server", "shared"): OTHER}


@pytest.mark.parametrize(
    "record, detail_part",
    [
        pytest.param("just-a-string", "JSON object", id="string"),
        pytest.param(42, "JSON object", id="number"),
        pytest.param(["type", "server"], "JSON object", id="list"),
        pytest.param(None, "JSON object", id="null"),
        pytest.param({"attributes": {}}, "'type'", id="missing-type"),
        pytest.param({"type": ""}, "'type'", id="empty-type"),
        pytest.param({"type": 7}, "'type'", id="type-not-string"),
        pytest.param({"type": "server", "attributes": [1, 2]}, "'attributes'", id="attributes-list"),
        pytest.param({"type": "server", "attributes": "x"}, "'attributes'", id="attributes-string"),
        pytest.param({"type": "server", "attributes": None}, "'attributes'", id="attributes-null"),
        pytest.param({"type": "server", "external_id": ""}, "'external_id'", id="external-id-empty"),
        pytest.param({"type": "server", "external_id": 12}, "'external_id'", id="external-id-number"),
    ],
)
def test_post_rejects_bad_records_with_400(record: Any, detail_part: str) -> None:
    outcome, index = run(RESOURCES, "post", [record])

    error = error_of(outcome.results[0])
    assert error == {"code": "InvalidRecord", "status": "400", "title": "Invalid Record",
                     "detail": error["detail"]}
    assert detail_part in error["detail"]
    assert outcome.ops == [] and index.objects == {}
    assert outcome.counts == Counts(processed=1, failed=1)


# --- resources / update -----------------------------------------------------------------------

def test_update_emits_a_merge_patch_and_leaves_the_index() -> None:
    index = with_objects((OBJ, TENANT))
    outcome, _ = run(RESOURCES, "update", [{"id": OBJ, "attributes": {"name": None, "n": 2}}], index)

    assert_ok(outcome.results[0], 0, OBJ, "updated")
    assert outcome.ops == [[OP_PATCH, OBJ, {"name": None, "n": 2}, AT]]
    assert outcome.counts == Counts(processed=1, updated=1)
    assert index.objects == {OBJ: TENANT}


@pytest.mark.parametrize("index", [
    pytest.param(ObjectIndex(), id="unknown-id"),
    pytest.param(with_objects((OBJ, OTHER)), id="other-tenant"),
])
def test_update_of_an_id_not_owned_by_the_tenant_is_404(index: ObjectIndex) -> None:
    outcome, _ = run(RESOURCES, "update", [{"id": OBJ, "attributes": {}}], index)

    error = error_of(outcome.results[0])
    assert (error["status"], error["code"]) == ("404", "NotFound")
    assert OBJ in error["detail"]
    assert outcome.ops == []


@pytest.mark.parametrize("record", [
    pytest.param({"id": OBJ}, id="no-attributes"),
    pytest.param({"id": OBJ, "attributes": [1]}, id="attributes-list"),
    pytest.param({"attributes": {}}, id="no-id"),
    pytest.param(OBJ, id="bare-id-string"),
])
def test_update_needs_an_object_with_id_and_attributes(record: Any) -> None:
    outcome, _ = run(RESOURCES, "update", [record], with_objects((OBJ, TENANT)))
    assert error_of(outcome.results[0])["status"] == "400"


# --- resources / delete -----------------------------------------------------------------------

@pytest.mark.parametrize("record", [pytest.param(OBJ, id="id-string"), pytest.param({"id": OBJ}, id="object-with-id")])
def test_delete_by_id(record: Any) -> None:
    index = with_objects((OBJ, TENANT), (SRC, TENANT))
    outcome, _ = run(RESOURCES, "delete", [record], index)

    assert_ok(outcome.results[0], 0, OBJ, "deleted")
    assert outcome.ops == [[OP_DELETE, OBJ]]
    assert outcome.counts == Counts(processed=1, deleted=1)
    assert index.objects == {SRC: TENANT}


@pytest.mark.parametrize("index", [
    pytest.param(ObjectIndex(), id="unknown-id"),
    pytest.param(with_objects((OBJ, OTHER)), id="other-tenant"),
])
def test_delete_of_an_id_not_owned_by_the_tenant_is_404(index: ObjectIndex) -> None:
    before = dict(index.objects)
    outcome, _ = run(RESOURCES, "delete", [OBJ], index)

    assert error_of(outcome.results[0])["status"] == "404"
    assert index.objects == before


def test_delete_twice_in_one_batch_fails_the_second() -> None:
    outcome, index = run(RESOURCES, "delete", [OBJ, {"id": OBJ}], with_objects((OBJ, TENANT)))
    assert_ok(outcome.results[0], 0, OBJ, "deleted")
    assert error_of(outcome.results[1])["status"] == "404"
    assert outcome.counts == Counts(processed=2, deleted=1, failed=1)


@pytest.mark.parametrize("record", [pytest.param("", id="empty-string"), pytest.param({"id": ""}, id="empty-id"),
                                    pytest.param(5, id="number"), pytest.param({}, id="no-id")])
def test_delete_needs_an_id(record: Any) -> None:
    outcome, _ = run(RESOURCES, "delete", [record], with_objects((OBJ, TENANT)))
    assert error_of(outcome.results[0])["status"] == "400"


# --- resources / external_id_set and external_id_delete ---------------------------------------

def test_external_id_set_creates_then_updates() -> None:
    first = {"type": "server", "external_id": "srv-9", "attributes": {"v": 1}}
    second = {"type": "server", "external_id": "srv-9", "attributes": {"v": 2}}
    expected_id = derived_id(TENANT, "server", "srv-9")

    outcome, index = run(RESOURCES, "external_id_set", [first, second])

    assert outcome.results == [[0, True, expected_id, None, "created"], [1, True, expected_id, None, "updated"]]
    assert outcome.ops == [
        [OP_CREATE, expected_id, TENANT, "server", "srv-9", {"v": 1}, AT],
        [OP_PATCH, expected_id, {"v": 2}, AT],
    ]
    assert outcome.counts == Counts(processed=2, created=1, updated=1)
    assert index.objects == {expected_id: TENANT}


@pytest.mark.parametrize("record", [
    pytest.param({"external_id": "x"}, id="no-type"),
    pytest.param({"type": "server"}, id="no-external-id"),
    pytest.param({"type": "server", "external_id": "x", "attributes": 3}, id="attributes-number"),
    pytest.param("x", id="string"),
])
def test_external_id_set_rejects_bad_records(record: Any) -> None:
    outcome, index = run(RESOURCES, "external_id_set", [record])
    assert error_of(outcome.results[0])["status"] == "400"
    assert index.objects == {}


@pytest.mark.parametrize(("record", "detail"), [
    pytest.param({"type": "", "external_id": "x"}, "'type' must be a non-empty string", id="empty-type"),
    pytest.param({"type": 5, "external_id": "x"}, "'type' must be a non-empty string", id="number-type"),
    pytest.param({"type": "server", "external_id": ""}, "'external_id' must be a non-empty string", id="empty-id"),
    pytest.param({"type": "server", "external_id": None}, "'external_id' must be a non-empty string", id="null-id"),
    pytest.param(["server", "x"], "record must be a JSON object, got list", id="list"),
])
def test_a_record_the_quick_check_passes_by_gets_the_error_of_its_field(record: Any, detail: str) -> None:
    """Each action by external id checks a usual record in one step; any other record still
    gets the error that names what is wrong with it."""
    for action in ("external_id_set", "external_id_update", "external_id_delete"):
        outcome, _ = run(RESOURCES, action, [record])
        assert error_of(outcome.results[0])["detail"] == detail


def test_external_id_delete_deletes_the_derived_object() -> None:
    expected_id = derived_id(TENANT, "server", "srv-1")
    index = with_objects((expected_id, TENANT))
    outcome, _ = run(RESOURCES, "external_id_delete", [{"type": "server", "external_id": "srv-1"}], index)

    assert_ok(outcome.results[0], 0, expected_id, "deleted")
    assert outcome.ops == [[OP_DELETE, expected_id]]
    assert outcome.counts == Counts(processed=1, deleted=1)
    assert index.objects == {}


def test_external_id_delete_of_a_missing_external_id_is_404_naming_it() -> None:
    outcome, _ = run(RESOURCES, "external_id_delete", [{"type": "server", "external_id": "nope"}])

    error = error_of(outcome.results[0])
    assert (error["status"], error["code"]) == ("404", "NotFound")
    assert "'nope'" in error["detail"] and "'server'" in error["detail"]


def test_external_id_delete_does_not_reach_another_tenants_object() -> None:
    theirs = derived_id(OTHER, "server", "srv-1")
    index = with_objects((theirs, OTHER))
    outcome, _ = run(RESOURCES, "external_id_delete", [{"type": "server", "external_id": "srv-1"}], index)

    assert error_of(outcome.results[0])["status"] == "404"
    assert index.objects == {theirs: OTHER}


# --- relationships ----------------------------------------------------------------------------

def rel(source: str = SRC, target: str = DST, relationship_type: str = "runs_on") -> dict[str, str]:
    return {"relationship_type": relationship_type, "source": source, "target": target}


def test_relationship_post_creates_under_the_fresh_id() -> None:
    fresh = uuid4().hex
    index = with_objects((SRC, TENANT), (DST, TENANT))

    outcome = apply_batch(RELATIONSHIPS, "post", TENANT, [[0, fresh, rel()]], index, AT)

    assert_ok(outcome.results[0], 0, fresh)
    assert outcome.ops == [[OP_REL_CREATE, fresh, TENANT, "runs_on", SRC, DST, AT]]
    assert outcome.counts == Counts(processed=1, created=1)
    assert index.relationships == {fresh: TENANT}
    assert index.objects == {SRC: TENANT, DST: TENANT}


def test_relationship_post_without_fresh_id_is_invalid() -> None:
    index = with_objects((SRC, TENANT), (DST, TENANT))
    outcome = apply_batch(RELATIONSHIPS, "post", TENANT, [[0, None, rel()]], index, AT)
    assert error_of(outcome.results[0])["status"] == "400"
    assert index.relationships == {}


@pytest.mark.parametrize("objects, missing", [
    pytest.param({DST: TENANT}, f"source object '{SRC}'", id="no-source"),
    pytest.param({SRC: TENANT}, f"target object '{DST}'", id="no-target"),
    pytest.param({SRC: OTHER, DST: TENANT}, f"source object '{SRC}'", id="source-other-tenant"),
    pytest.param({SRC: TENANT, DST: OTHER}, f"target object '{DST}'", id="target-other-tenant"),
])
def test_relationship_post_needs_both_ends_owned_by_the_tenant(objects: dict[str, str], missing: str) -> None:
    index = ObjectIndex(objects=dict(objects))
    outcome, _ = run(RELATIONSHIPS, "post", [rel()], index)

    error = error_of(outcome.results[0])
    assert error["status"] == "404"
    assert missing in error["detail"]
    assert outcome.ops == [] and index.relationships == {}


def test_relationship_post_sees_objects_deleted_earlier() -> None:
    index = with_objects((SRC, TENANT), (DST, TENANT))
    run(RESOURCES, "delete", [DST], index)
    outcome, _ = run(RELATIONSHIPS, "post", [rel()], index)
    assert "target object" in error_of(outcome.results[0])["detail"]


@pytest.mark.parametrize("record", [
    pytest.param({"source": SRC, "target": DST}, id="no-type"),
    pytest.param({"relationship_type": "r", "target": DST}, id="no-source"),
    pytest.param({"relationship_type": "r", "source": SRC}, id="no-target"),
    pytest.param([SRC, DST], id="list"),
])
def test_relationship_post_rejects_bad_records(record: Any) -> None:
    outcome, _ = run(RELATIONSHIPS, "post", [record], with_objects((SRC, TENANT), (DST, TENANT)))
    assert error_of(outcome.results[0])["status"] == "400"


@pytest.mark.parametrize("record", [pytest.param(REL, id="id-string"), pytest.param({"id": REL}, id="object-with-id")])
def test_relationship_delete(record: Any) -> None:
    index = ObjectIndex(objects={SRC: TENANT}, relationships={REL: TENANT})
    outcome, _ = run(RELATIONSHIPS, "delete", [record], index)

    assert_ok(outcome.results[0], 0, REL, "deleted")
    assert outcome.ops == [[OP_REL_DELETE, REL]]
    assert outcome.counts == Counts(processed=1, deleted=1)
    assert index.relationships == {} and index.objects == {SRC: TENANT}


@pytest.mark.parametrize("relationships", [
    pytest.param({}, id="unknown-id"),
    pytest.param({REL: OTHER}, id="other-tenant"),
])
def test_relationship_delete_of_a_relationship_not_owned_is_404(relationships: dict[str, str]) -> None:
    index = ObjectIndex(relationships=dict(relationships))
    outcome, _ = run(RELATIONSHIPS, "delete", [REL], index)
    assert error_of(outcome.results[0])["status"] == "404"
    assert index.relationships == relationships


def test_a_relationship_id_is_not_an_object_id() -> None:
    index = ObjectIndex(relationships={REL: TENANT})
    outcome, _ = run(RESOURCES, "delete", [REL], index)
    assert error_of(outcome.results[0])["status"] == "404"
    assert index.relationships == {REL: TENANT}


# --- whole batches ----------------------------------------------------------------------------

def test_refused_item_fails_with_its_reason() -> None:
    reason = "line is not valid JSON: {oops"
    outcome = apply_batch(RESOURCES, "post", TENANT, [[3, None, None, reason]], ObjectIndex(), AT)

    assert outcome.results == [[3, False, None, [
        {"code": "InvalidRecord", "status": "400", "title": "Invalid Record", "detail": reason}], "failed"]]
    assert outcome.ops == []
    assert outcome.counts == Counts(processed=1, failed=1)


def test_a_skipped_row_is_counted_skipped_with_its_reason() -> None:
    refused = records.Refused("the row has 2 columns; the header has 3", skipped=True)
    items = [refused.item(0), [1, None, {"type": "server", "external_id": "ok"}]]

    outcome = apply_batch(RESOURCES, "external_id_set", TENANT, items, ObjectIndex(), AT)

    assert error_of(outcome.results[0], "skipped")["detail"] == refused.reason
    assert outcome.results[1][4] == "created"
    assert outcome.counts == Counts(processed=2, created=1, skipped=1)


def test_mixed_batch_keeps_order_shape_and_counts() -> None:
    index = with_objects((OBJ, TENANT))
    taken = {"type": "server", "external_id": "taken"}
    run(RESOURCES, "post", [taken], index)
    items = [
        [10, None, {"type": "server", "external_id": "ok-1"}],
        [11, None, None, "record is 2000000 bytes, over the limit"],
        [12, None, "not-an-object"],
        [13, None, taken],
        [14, uuid4().hex, {"type": "server", "attributes": {"k": "v"}}],
    ]

    outcome = apply_batch(RESOURCES, "post", TENANT, items, index, AT)

    assert [r[0] for r in outcome.results] == [10, 11, 12, 13, 14]
    assert [r[1] for r in outcome.results] == [True, False, False, False, True]
    for _index, success, object_id, errors, *_ in outcome.results:
        if success:
            assert isinstance(object_id, str) and errors is None
        else:
            assert object_id is None and len(errors) == 1 and set(errors[0]) == {"code", "status", "title", "detail"}
    # A record that failed on its owner keeps its body, for a retry; one refused on arrival has none.
    assert [result[5:] for result in outcome.results] == [[], [], ["not-an-object"], [taken], []]
    assert outcome.results[4][2] == items[4][1]
    assert outcome.counts == Counts(processed=5, created=2, failed=3)
    assert [op[1] for op in outcome.ops] == [outcome.results[0][2], outcome.results[4][2]]
    assert outcome.results[0][2] == derived_id(TENANT, "server", "ok-1")
    assert set(index.objects) == {OBJ, derived_id(TENANT, "server", "taken"),
                                  outcome.results[0][2], outcome.results[4][2]}


def test_empty_batch() -> None:
    outcome = apply_batch(RESOURCES, "post", TENANT, [], ObjectIndex(), AT)
    assert (outcome.results, outcome.ops, outcome.counts) == ([], [], Counts())


def test_unknown_action_fails_every_record() -> None:
    index = with_objects((OBJ, TENANT))
    outcome = apply_batch(RELATIONSHIPS, "external_id_set", TENANT, [[0, None, OBJ], [1, None, {"id": OBJ}]], index, AT)

    assert [error_of(r)["code"] for r in outcome.results] == ["InvalidRecord", "InvalidRecord"]
    assert "relationships/external_id_set" in error_of(outcome.results[0])["detail"]
    assert outcome.counts == Counts(processed=2, failed=2)
    assert index.objects == {OBJ: TENANT}


def test_a_rule_that_raises_fails_only_its_record(monkeypatch: pytest.MonkeyPatch) -> None:
    real_post = records.HANDLERS[(RESOURCES, "post")]

    def flaky_post(ctx: records.Context, fresh_id: str | None, record: Any) -> Any:
        if record.get("explode"):
            raise ZeroDivisionError("boom")
        return real_post(ctx, fresh_id, record)

    monkeypatch.setitem(records.HANDLERS, (RESOURCES, "post"), flaky_post)
    recs = [{"type": "a"}, {"type": "b", "explode": True}, {"type": "c"}]

    outcome, index = run(RESOURCES, "post", recs)

    assert [r[1] for r in outcome.results] == [True, False, True]
    error = error_of(outcome.results[1])
    assert (error["code"], error["status"], error["title"]) == ("InternalError", "500", "Internal Error")
    assert "ZeroDivisionError" in error["detail"] and "boom" in error["detail"]
    assert outcome.counts == Counts(processed=3, created=2, failed=1)
    assert len(index.objects) == 2


def test_fail_all_fails_every_item_with_the_error() -> None:
    error = {"code": "InternalError", "status": "500", "title": "Internal Error", "detail": "x"}
    items = [[4, uuid4().hex, {"type": "a"}], [5, None, None, "refused"], [9, None, "id"]]

    outcome = fail_all(items, error)

    assert outcome.results == [[4, False, None, [error], "failed", {"type": "a"}],
                               [5, False, None, [error], "failed"], [9, False, None, [error], "failed", "id"]]
    assert outcome.ops == []
    assert outcome.counts == Counts(processed=3, failed=3)


def test_fail_all_of_nothing() -> None:
    outcome = fail_all([], {"code": "X"})
    assert (outcome.results, outcome.counts) == ([], Counts())


def test_index_apply_op_ignores_patches_and_missing_deletes() -> None:
    index = ObjectIndex()
    index.apply_op([OP_CREATE, OBJ, TENANT, "t", None, {}, AT])
    index.apply_op([OP_PATCH, OBJ, {"a": 1}, AT])
    index.apply_op([OP_DELETE, SRC])
    index.apply_op([OP_REL_CREATE, REL, TENANT, "r", OBJ, OBJ, AT])
    index.apply_op([OP_REL_DELETE, "missing"])
    assert index.objects == {OBJ: TENANT}
    assert index.relationships == {REL: TENANT}


def test_outcomes_travel_as_the_plain_strings_results_have_always_carried() -> None:
    applied, _ = run(RESOURCES, "post", [{"type": "server"}, 42])
    assert [str(outcome) for outcome in Outcome] == ["created", "updated", "deleted", "skipped", "failed"]
    assert orjson.loads(orjson.dumps(applied.results))[0][RESULT_OUTCOME] == "created"
    assert [result[RESULT_OUTCOME] for result in applied.results] == [Outcome.CREATED, Outcome.FAILED]

    decoded = orjson.loads(orjson.dumps([records.Refused("bad row", skipped=True).item(0)]))
    assert apply_batch(RESOURCES, "post", TENANT, decoded, ObjectIndex(), AT).counts == Counts(processed=1, skipped=1)


def test_an_item_too_short_to_unpack_fails_alone_without_a_body() -> None:
    items = [[0, None, {"type": "server", "external_id": "short-ok"}], [1, None]]
    outcome = apply_batch(RESOURCES, "post", TENANT, items, ObjectIndex(), AT)
    assert [result[4] for result in outcome.results] == ["created", "failed"]
    assert len(outcome.results[1]) == 5  # no body to keep
