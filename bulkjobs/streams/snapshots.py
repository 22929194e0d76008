"""Snapshots of the object index, per partition, in the compacted snapshots topic.

``Snapshotter`` writes them (a worker's timer, and before a rebalance takes partitions away:
``hand_over``): chunks of the partition's ids and of the
applied-map entries still needed, then the manifest, then tombstones for the previous
generation. ``SnapshotRestorer`` finds a partition's latest complete snapshot by reading the
snapshots partition backwards from its end, never its whole history. Both get their I/O
injected (a publisher, a ``SnapshotLog``), so they are tested without a broker. The design and
its failure cases: docs/architecture.md, "Snapshots".
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol

from bulkjobs.clock import utc_now
from bulkjobs.domain.counts import Counts
from bulkjobs.domain.records import ObjectIndex
from bulkjobs.kafka.refetch import Entry
from bulkjobs.kafka.topics import (
    MAX_VALUE_BYTES,
    SnapshotChunk,
    SnapshotManifest,
    chunk_key,
    decode,
    encode,
    manifest_key,
)
from bulkjobs.streams import metrics
from bulkjobs.streams.state import ObjectState

log = logging.getLogger(__name__)

# Ids per chunk before its size is checked: 32-hex ids encode to 35 bytes, so about 700 KB,
# and encoding one chunk takes about a millisecond (the event loop gets a turn between two).
CHUNK_IDS = 20_000
FIRST_WINDOW = 16  # messages read back from the end to find the last manifest; then 4x more
# A partition is due by time only once its changes offset has not moved for this long (or for
# ``every_seconds``, if shorter), and no job is running: a snapshot copies and sends the
# partition's whole index, half a second of a core at 450,000 objects, and the timer's took it in
# the middle of whatever job was running (the bench's job after a second worker joined paid for
# four; with jobs back to back, the next job's upload paid for all eight). The pause is longer
# than the store takes to write a large job's last results after the worker applied its last
# batch (about 9 s for 1M records with millions of objects in the view), so that the snapshots do
# not slow the store down while its user waits. A partition that never pauses is snapshotted by
# its count of changes, which is what bounds a restart's replay.
QUIET_SECONDS = 20.0


@dataclass
class Snapshot:
    """A partition's index as of ``manifest.changes_offset``, and what reading it cost."""

    manifest: SnapshotManifest
    index: ObjectIndex = field(default_factory=ObjectIndex)
    applied: dict[tuple[str, int], Counts] = field(default_factory=dict)
    messages: int = 0
    bytes: int = 0


# --- encoding (pure) -----------------------------------------------------------------------------


def _by_tenant(ids: dict[str, str]) -> Iterator[tuple[str, str]]:
    """(tenant, id) pairs, so that a chunk lists each tenant once."""
    return ((tenant, object_id) for object_id, tenant in ids.items())


def _grouped(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for tenant, object_id in pairs:
        grouped.setdefault(tenant, []).append(object_id)
    return grouped


def _fitting(chunk: SnapshotChunk) -> Iterator[bytes]:
    """The chunk encoded, split in halves until each part is under the message limit."""
    value = encode(chunk)
    if len(value) <= MAX_VALUE_BYTES:
        yield value
        return
    pairs = [("o", t, i) for t, ids in chunk.objects.items() for i in ids]
    pairs += [("r", t, i) for t, ids in chunk.relationships.items() for i in ids]
    if len(pairs) + len(chunk.applied) <= 1:
        raise ValueError(f"one id or applied entry does not fit in a message ({len(value)} bytes)")
    half_pairs, half_applied = len(pairs) // 2, len(chunk.applied) // 2
    for part_pairs, part_applied in ((pairs[:half_pairs], chunk.applied[:half_applied]),
                                     (pairs[half_pairs:], chunk.applied[half_applied:])):
        yield from _fitting(SnapshotChunk(
            objects=_grouped((t, i) for kind, t, i in part_pairs if kind == "o"),
            relationships=_grouped((t, i) for kind, t, i in part_pairs if kind == "r"),
            applied=part_applied,
        ))


def encode_chunks(index: ObjectIndex, applied: dict[tuple[str, int], Counts],
                  chunk_ids: int = CHUNK_IDS) -> Iterator[bytes]:
    """The values of a snapshot's chunks (at least one, maybe empty), each under the message
    limit; a generator, so the writer can yield to the event loop between two."""
    entries = [[job_id, seq, counts.to_dict()] for (job_id, seq), counts in applied.items()]
    objects, relationships = _by_tenant(index.objects), _by_tenant(index.relationships)
    first = True
    while True:
        object_slice = list(islice(objects, chunk_ids))
        relationship_slice = list(islice(relationships, chunk_ids - len(object_slice)))
        applied_slice, entries = entries[:chunk_ids], entries[chunk_ids:]
        if not (object_slice or relationship_slice or applied_slice or first):
            return
        first = False
        yield from _fitting(SnapshotChunk(objects=_grouped(object_slice),
                                          relationships=_grouped(relationship_slice), applied=applied_slice))


def load_chunk(value: bytes, into: Snapshot) -> None:
    """Add a chunk's ids and applied entries to the snapshot being restored."""
    chunk = SnapshotChunk(**decode(value))
    for tenant, ids in chunk.objects.items():
        into.index.objects.update(dict.fromkeys(ids, tenant))
    for tenant, ids in chunk.relationships.items():
        into.index.relationships.update(dict.fromkeys(ids, tenant))
    for job_id, seq, counts in chunk.applied:
        into.applied[(job_id, seq)] = Counts.from_dict(counts)


# --- reading ------------------------------------------------------------------------------------


class SnapshotLog(Protocol):
    """Reads a partition of the snapshots topic by offset (``kafka.refetch.Refetcher``)."""

    async def end_offset(self, partition: int) -> int: ...

    async def read(self, partition: int, start: int, end: int) -> list[Entry]: ...


class SnapshotRestorer:
    def __init__(self, snapshot_log: SnapshotLog) -> None:
        self.log = snapshot_log

    async def latest(self, partition: int) -> Snapshot | None:
        """The partition's last complete snapshot, or None if it never had one. Reads back from
        the end in growing windows until a manifest is found, then the chunks it names."""
        end = await self.log.end_offset(partition)
        window, start = FIRST_WINDOW, end
        read: dict[int, Entry] = {}
        while start > 0:
            start, stop = max(0, end - window), start
            for entry in await self.log.read(partition, start, stop):
                read[entry[0]] = entry
            manifest = _last_manifest(partition, read)
            if manifest is not None:
                return await self._load(partition, manifest, read)
            window *= 4
        return None

    async def _load(self, partition: int, manifest: SnapshotManifest, read: dict[int, Entry]) -> Snapshot:
        missing = [offset for offset in manifest.chunk_offsets if offset not in read]
        if missing:
            for entry in await self.log.read(partition, min(missing), max(missing) + 1):
                read[entry[0]] = entry
        snapshot = Snapshot(manifest=manifest)
        for key, offset in zip(manifest.chunk_keys, manifest.chunk_offsets, strict=True):
            _, read_key, value = read[offset]
            if read_key != key.encode() or value is None:
                raise ValueError(f"snapshot {manifest.generation} of partition {partition}: chunk {key} "
                                 f"is not at offset {offset}")
            load_chunk(value, snapshot)
        snapshot.messages = len(read)
        snapshot.bytes = sum(len(value or b"") for _, _, value in read.values())
        metrics.SNAPSHOT_READ.labels("messages").inc(snapshot.messages)
        metrics.SNAPSHOT_READ.labels("bytes").inc(snapshot.bytes)
        log.info("partition %d restored from snapshot %s (changes up to %d): %d objects, %d relationships, "
                 "%d messages, %d bytes read", partition, manifest.generation, manifest.changes_offset,
                 len(snapshot.index.objects), len(snapshot.index.relationships), snapshot.messages, snapshot.bytes)
        return snapshot


def _last_manifest(partition: int, read: dict[int, Entry]) -> SnapshotManifest | None:
    wanted = manifest_key(partition)
    for offset in sorted(read, reverse=True):
        _, key, value = read[offset]
        if key == wanted and value is not None:
            return SnapshotManifest(**decode(value))
    return None


# --- writing ------------------------------------------------------------------------------------


class Publish(Protocol):
    async def __call__(self, topic: str, value: bytes | None, *, key: bytes | None = None,
                       partition: int | None = None) -> int: ...


class Snapshotter:
    """Writes a partition's snapshot when it is due: after ``every_changes`` changes, or
    ``every_seconds`` after the last one if anything changed since, the partition has been quiet
    for ``QUIET_SECONDS`` and no job is ``running``; and, before a rebalance revokes partitions,
    of each that changed since its last snapshot. One at a time."""

    def __init__(self, *, objects: ObjectState, publish: Publish, topic: str, finished: Callable[[str], bool],
                 running: Callable[[], bool], every_changes: int, every_seconds: float,
                 clock: Callable[[], float] = time.monotonic, now: Callable[[], str] = utc_now) -> None:
        self.objects, self.publish, self.topic, self.finished = objects, publish, topic, finished
        self.running = running  # whether any job is queued or processing
        self.every_changes, self.every_seconds = every_changes, every_seconds
        self.clock, self.now = clock, now
        self.taken_at: dict[int, float] = {}  # partition -> clock of its last snapshot (or first look)
        self.quiet_seconds = min(QUIET_SECONDS, every_seconds)
        self.moved: dict[int, tuple[int, float]] = {}  # partition -> its changes offset, and when first seen
        self._one_at_a_time = asyncio.Lock()  # the timer's and a hand-over's

    def _changes_since_snapshot(self, partition: int) -> int:
        last = self.objects.manifests.get(partition)
        return self.objects.offsets.get(partition, -1) - (last.changes_offset if last else -1)

    def _quiet_for(self, partition: int, now: float) -> float:
        """Seconds since a look last saw the partition's changes offset move."""
        offset = self.objects.offsets.get(partition, -1)
        seen = self.moved.get(partition)
        if seen is None or seen[0] != offset:
            self.moved[partition] = seen = (offset, now)
        return now - seen[1]

    def due(self, partition: int) -> bool:
        now = self.clock()
        quiet = self._quiet_for(partition, now)  # at every look, so that a pause is seen as it starts
        new = self._changes_since_snapshot(partition)
        since = now - self.taken_at.setdefault(partition, now)
        return new > 0 and (new >= self.every_changes
                            or (since >= self.every_seconds and quiet >= self.quiet_seconds and not self.running()))

    def _may_take(self, partition: int) -> bool:
        """Caught up, and no dry run applied to it: a run's overlay lives only in the changes
        after the snapshot's offset, so a snapshot taken meanwhile would lose the run's earlier
        would-be ops on a restore."""
        dry_runs = self.objects.dry_runs
        if dry_runs:
            dry_runs.drop_ended(self.finished)
        return partition in self.objects.synced and not dry_runs.on(partition)

    async def look(self, owned: Iterable[int]) -> None:
        """Snapshot the first owned partition that is due and may be taken."""
        for partition in sorted(owned):
            if self.due(partition) and self._may_take(partition):
                await self.take(partition)
                return

    async def hand_over(self, partitions: Iterable[int]) -> None:
        """Before a rebalance revokes ``partitions``: snapshot each that changed since its last
        snapshot, so that its next owner loads the live ids rather than reading (and decoding)
        every change since. Faust revokes once the agents are done with their events, and the
        group assigns the partitions again only after every member is done revoking, so the
        next owner finds these snapshots."""
        for partition in sorted(partitions):
            async with self._one_at_a_time:  # after a snapshot under way, which may hold everything
                if self._changes_since_snapshot(partition) > 0 and self._may_take(partition):
                    await self._take(partition)

    async def take(self, partition: int) -> SnapshotManifest | None:
        """Write the partition's snapshot; None if the partition was lost meanwhile."""
        async with self._one_at_a_time:
            return await self._take(partition)

    async def _take(self, partition: int) -> SnapshotManifest | None:
        await self.objects.settled()
        started = time.perf_counter()
        # Taken with no await in between: the index, the entries and the offset agree.
        self.objects.prune_applied(partition, self.finished)
        source = self.objects.index_of(partition)
        index = ObjectIndex(objects=source.objects.copy(), relationships=source.relationships.copy())
        applied = dict(self.objects.applied.get(partition, {}))
        offset = self.objects.offsets.get(partition, -1)
        previous = self.objects.manifests.get(partition)
        generation = f"{int(previous.generation.split('-')[0]) + 1 if previous else 1}-{secrets.token_hex(4)}"
        keys: list[str] = []
        offsets: list[int] = []
        for value in encode_chunks(index, applied):
            keys.append(chunk_key(partition, generation, len(keys)))
            offsets.append(await self.publish(self.topic, value, key=keys[-1].encode(), partition=partition))
            await asyncio.sleep(0)
        if partition not in self.objects.synced:
            log.info("partition %d was revoked during its snapshot %s: no manifest", partition, generation)
            return None
        manifest = SnapshotManifest(partition=partition, generation=generation, changes_offset=offset,
                                    chunk_keys=keys, chunk_offsets=offsets, at=self.now())
        await self.publish(self.topic, encode(manifest), key=manifest_key(partition), partition=partition)
        self.objects.manifests[partition] = manifest
        self.taken_at[partition] = self.clock()
        for key in previous.chunk_keys if previous else ():
            await self.publish(self.topic, None, key=key.encode(), partition=partition)
        metrics.SNAPSHOTS.inc()
        metrics.SNAPSHOT_SECONDS.observe(time.perf_counter() - started)
        log.info("partition %d: snapshot %s of changes up to %d, %d objects, %d relationships, %d chunks, %.3f s",
                 partition, generation, offset, len(index.objects), len(index.relationships), len(keys),
                 time.perf_counter() - started)
        return manifest

