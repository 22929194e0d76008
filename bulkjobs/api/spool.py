"""Routing a job's records to their owning partitions in batches, spooled to a temporary file.

Nothing is published until the whole body has been read and accepted, so a body that turns
out malformed or too large halfway leaves no trace in Kafka. Each spooled batch is one
``RecordBatch`` message, already encoded, with the partition it goes to.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import orjson

from bulkjobs.domain.identity import route
from bulkjobs.domain.records import Refused
from bulkjobs.streams.topics import RecordBatch, encode

# A batch's AppliedBatch carries its records' attributes again plus a result per record, so a
# batch message stays well under the 1 MB message limit to leave its AppliedBatch room too.
MAX_MESSAGE_BYTES = 600 * 1024
_HEADER = struct.Struct("<HI")  # partition, payload length


class BatchSpool:
    def __init__(self, *, job_id: str, tenant: str, kind: str, action: str, partitions: int,
                 batch_records: int, batch_bytes: int, directory: Path) -> None:
        self.job_id, self.tenant, self.kind, self.action = job_id, tenant, kind, action
        self.partitions = partitions
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self.records = 0
        self.batches = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=directory)
        self._pending: list[list[list[Any]]] = [[] for _ in range(partitions)]
        self._pending_bytes = [0] * partitions

    def add(self, records: list[Any], size: int) -> None:
        """Route ``records`` (which came from ``size`` bytes of body)."""
        if not records:
            return
        estimate = max(1, size // len(records))  # per-record dumps would cost more than routing
        kind, action, tenant, partitions = self.kind, self.action, self.tenant, self.partitions
        pending, pending_bytes = self._pending, self._pending_bytes
        limit_records, limit_bytes = self.batch_records, self.batch_bytes
        index = self.records
        for record in records:
            if isinstance(record, Refused):
                partition = index % partitions
                item = record.item(index)
            else:
                partition, fresh_id = route(kind, action, tenant, record, partitions, index)
                item = [index, fresh_id, record]
            index += 1
            batch = pending[partition]
            batch.append(item)
            pending_bytes[partition] += estimate
            if len(batch) >= limit_records or pending_bytes[partition] >= limit_bytes:
                self._flush(partition)
        self.records = index

    def close(self) -> None:
        """All records are in: write the partly filled batches."""
        for partition in range(self.partitions):
            if self._pending[partition]:
                self._flush(partition)
        self._file.seek(0)

    def _flush(self, partition: int) -> None:
        items, self._pending[partition], self._pending_bytes[partition] = self._pending[partition], [], 0
        self._write(partition, items)

    def _write(self, partition: int, items: list[list[Any]]) -> None:
        payload = self._encode(items)
        if len(payload) > MAX_MESSAGE_BYTES:
            if len(items) > 1:
                half = len(items) // 2
                self._write(partition, items[:half])
                self._write(partition, items[half:])
                return
            index, _, record = items[0][:3]
            size = len(orjson.dumps(record))
            reason = f"record is {size} bytes, over the limit of {MAX_MESSAGE_BYTES} bytes"
            payload = self._encode([[index, None, None, reason]])
        self._file.write(_HEADER.pack(partition, len(payload)))
        self._file.write(payload)
        self.batches += 1

    def _encode(self, items: list[list[Any]]) -> bytes:
        return encode(RecordBatch(job_id=self.job_id, tenant=self.tenant, type=self.kind,
                                  action=self.action, seq=self.batches, items=items))

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """(partition, encoded RecordBatch) for every spooled batch, in order."""
        while header := self._file.read(_HEADER.size):
            partition, length = _HEADER.unpack(header)
            yield partition, self._file.read(length)

    def discard(self) -> None:
        self._file.close()
