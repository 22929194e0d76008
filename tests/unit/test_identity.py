"""Object identity and routing: derived ids, partition ownership and where each record goes."""

from __future__ import annotations

import re
import zlib
from typing import Any

import pytest

from bulkjobs.domain.identity import (
    ACTIONS,
    RELATIONSHIPS,
    RESOURCES,
    derived_id,
    fresh_id,
    is_job_id,
    partition_of,
    route,
)

HEX32 = re.compile(r"^[0-9a-f]{32}$")
TENANT = "tenant-a"


# --- derived_id and new_id --------------------------------------------------------------------

def test_derived_id_is_deterministic_32_hex() -> None:
    first = derived_id(TENANT, "server", "srv-1")
    assert HEX32.match(first)
    assert derived_id(TENANT, "server", "srv-1") == first


@pytest.mark.parametrize("other", [
    pytest.param(("tenant-b", "server", "srv-1"), id="tenant"),
    pytest.param((TENANT, "switch", "srv-1"), id="type"),
    pytest.param((TENANT, "server", "srv-2"), id="external-id"),
    pytest.param((TENANT, "server", "SRV-1"), id="case"),
    pytest.param((TENANT, "serv", "er\x00srv-1"), id="field-boundary"),
])
def test_derived_id_is_scoped_by_tenant_type_and_external_id(other: tuple[str, str, str]) -> None:
    assert derived_id(*other) != derived_id(TENANT, "server", "srv-1")


def test_derived_id_starts_with_the_crc32_of_its_key() -> None:
    key = f"{TENANT}\x00server\x00srv-1".encode()
    assert derived_id(TENANT, "server", "srv-1")[:8] == f"{zlib.crc32(key):08x}"


@pytest.mark.parametrize(("key", "expected"), [
    pytest.param(("acme", "server", "srv-1"), "2509d748868ca198f917f3af3fd5651b", id="ascii"),
    pytest.param(("tén", "tÿpe", "ẽxt-1"), "239028a183ce28ed0d06f2718cb829b7", id="non-ascii"),
])
def test_derived_id_never_changes(key: tuple[str, str, str], expected: str) -> None:
    # Ids already live in views and snapshots: a faster computation must give the same ones.
    assert derived_id(*key) == expected


def test_derived_id_of_non_ascii_keys() -> None:
    assert HEX32.match(derived_id("tënant", "sérver", "名前"))


def test_fresh_ids_are_32_hex_unique_per_job_and_index_and_repeatable() -> None:
    ids = {fresh_id(job, i) for job in ("job-1", "job-2") for i in range(500)}
    assert len(ids) == 1000
    assert all(HEX32.match(i) for i in ids)
    assert fresh_id("job-1", 7) == fresh_id("job-1", 7)


# --- partition_of -----------------------------------------------------------------------------

IDS = [
    "00000000000000000000000000000000",
    "ffffffffffffffffffffffffffffffff",
    "0123456789abcdef0123456789abcdef",
    "ABCDEF0123456789ABCDEF0123456789",
    derived_id(TENANT, "server", "srv-1"),
    "not-an-id",
    "zzzzzzzzzzzzzzzz",
    "",
    "ü-ñ-ïcode",
    "12 34",
    "-1",
]


@pytest.mark.parametrize("partitions", [1, 2, 3, 8, 64, 1000])
@pytest.mark.parametrize("object_id", IDS)
def test_partition_of_is_in_range_and_stable(object_id: str, partitions: int) -> None:
    partition = partition_of(object_id, partitions)
    assert 0 <= partition < partitions
    assert partition_of(object_id, partitions) == partition


def test_partition_of_a_hex_id_is_its_first_eight_digits() -> None:
    assert partition_of("0000000a" + "f" * 24, 8) == 10 % 8
    assert partition_of("ffffffff" + "0" * 24, 7) == 0xFFFFFFFF % 7
    assert partition_of("0000000aXYZ", 8) == 2  # only the first eight characters count


def test_partition_of_a_non_hex_id_uses_crc32() -> None:
    assert partition_of("not-an-id", 16) == zlib.crc32(b"not-an-id") % 16


def test_partition_of_spreads_fresh_ids() -> None:
    seen = {partition_of(fresh_id("job-1", i), 8) for i in range(500)}
    assert seen == set(range(8))


# --- route ------------------------------------------------------------------------------------

P = 8


def test_every_action_routes() -> None:
    for record_type, actions in ACTIONS.items():
        for action in actions:
            rec = {"id": "x", "type": "t", "external_id": "e", "source": "s", "target": "t", "relationship_type": "r"}
            partition, _ = route(record_type, action, TENANT, rec, P, 0, "job-1")
            assert 0 <= partition < P


@pytest.mark.parametrize("action", ["post", "external_id_set", "external_id_delete"])
def test_a_record_naming_an_external_id_goes_to_the_owner_of_its_derived_id(action: str) -> None:
    rec = {"type": "server", "external_id": "srv-1", "attributes": {}}
    partition, fresh = route(RESOURCES, action, TENANT, rec, P, 3, "job-1")

    assert fresh is None
    assert partition == partition_of(derived_id(TENANT, "server", "srv-1"), P)


@pytest.mark.parametrize("action, record", [
    ("update", {"id": "ID", "attributes": {}}),
    ("delete", {"id": "ID"}),
    ("delete", "ID"),
])
def test_a_record_naming_a_derived_id_meets_the_one_naming_its_external_id(action: str, record: Any) -> None:
    object_id = derived_id(TENANT, "server", "srv-1")
    rec = record.replace("ID", object_id) if isinstance(record, str) else {**record, "id": object_id}
    by_id = route(RESOURCES, action, TENANT, rec, P, 0, "job-1")
    by_external_id = route(RESOURCES, "external_id_set", TENANT, {"type": "server", "external_id": "srv-1"}, P, 0,
                           "job-1")
    assert by_id == by_external_id


@pytest.mark.parametrize("record_type, record", [
    pytest.param(RESOURCES, {"type": "server", "attributes": {"a": 1}}, id="resource-without-external-id"),
    pytest.param(RESOURCES, {"type": "server", "external_id": None}, id="resource-external-id-null"),
    pytest.param(RELATIONSHIPS, {"relationship_type": "r", "source": "a", "target": "b"}, id="relationship"),
])
def test_a_create_without_external_id_gets_a_fresh_id_that_it_is_routed_by(record_type: str, record: Any) -> None:
    partition, fresh = route(record_type, "post", TENANT, record, P, 5, "job-1")
    assert fresh == fresh_id("job-1", 5)
    assert partition == partition_of(fresh, P)
    assert route(record_type, "post", TENANT, record, P, 6, "job-1")[1] != fresh


@pytest.mark.parametrize("record_type, action, record", [
    (RESOURCES, "update", {"id": "0123456789abcdef0123456789abcdef", "attributes": {}}),
    (RESOURCES, "delete", {"id": "0123456789abcdef0123456789abcdef"}),
    (RESOURCES, "delete", "0123456789abcdef0123456789abcdef"),
    (RESOURCES, "delete", "some-foreign-id"),
    (RELATIONSHIPS, "delete", {"id": "0123456789abcdef0123456789abcdef"}),
    (RELATIONSHIPS, "delete", "some-foreign-id"),
])
def test_update_and_delete_go_to_the_owner_of_the_given_id(record_type: str, action: str, record: Any) -> None:
    given = record if isinstance(record, str) else record["id"]
    assert route(record_type, action, TENANT, record, P, 5, "job-1") == (partition_of(given, P), None)


@pytest.mark.parametrize("record_type, action, record", [
    pytest.param(RESOURCES, "post", "a-string", id="post-string"),
    pytest.param(RESOURCES, "post", ["list"], id="post-list"),
    pytest.param(RESOURCES, "post", None, id="post-null"),
    pytest.param(RESOURCES, "post", {"type": "server", "external_id": 5}, id="post-external-id-number"),
    pytest.param(RESOURCES, "external_id_set", {"type": "server"}, id="set-no-external-id"),
    pytest.param(RESOURCES, "external_id_set", {"external_id": "e"}, id="set-no-type"),
    pytest.param(RESOURCES, "external_id_delete", "e", id="external-delete-string"),
    pytest.param(RESOURCES, "update", {"attributes": {}}, id="update-no-id"),
    pytest.param(RESOURCES, "update", {"id": 17}, id="update-id-number"),
    pytest.param(RESOURCES, "delete", "", id="delete-empty-string"),
    pytest.param(RESOURCES, "delete", {"id": ""}, id="delete-empty-id"),
    pytest.param(RESOURCES, "delete", 42, id="delete-number"),
    pytest.param(RELATIONSHIPS, "delete", None, id="relationship-delete-null"),
])
@pytest.mark.parametrize("fallback", [0, 5, 13])
def test_a_malformed_record_goes_to_the_fallback_partition(record_type: str, action: str, record: Any,
                                                           fallback: int) -> None:
    assert route(record_type, action, TENANT, record, P, fallback, "job-1") == (fallback % P, None)


def test_route_is_tenant_scoped_for_external_ids() -> None:
    rec = {"type": "server", "external_id": "srv-1"}
    ours = route(RESOURCES, "external_id_set", TENANT, rec, 1 << 16, 0, "job-1")[0]
    theirs = route(RESOURCES, "external_id_set", "tenant-b", rec, 1 << 16, 0, "job-1")[0]
    assert ours == partition_of(derived_id(TENANT, "server", "srv-1"), 1 << 16)
    assert theirs == partition_of(derived_id("tenant-b", "server", "srv-1"), 1 << 16)
    assert ours != theirs


# --- job ids ----------------------------------------------------------------------------------

@pytest.mark.parametrize("job_id, ok", [
    ("0123456789abcdef0123456789abcdef", True),
    ("nightly-2026-11-25", True),
    ("a_b-C", True),
    ("x" * 64, True),
    ("x" * 65, False),
    ("", False),
    ("../etc", False),
    ("a/b", False),
    ("a b", False),
    ("é", False),
    ("abc\n", False),
    (5, False),
    (None, False),
])
def test_a_job_id_is_1_to_64_letters_digits_dashes_or_underscores(job_id: object, ok: bool) -> None:
    assert is_job_id(job_id) is ok
