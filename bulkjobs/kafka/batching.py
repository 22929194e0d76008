"""Routing a job's records to their owning partitions, cut into numbered ``RecordBatch`` messages.

The API routes an HTTP job's records through it (into a spool file, ``api.spool``); the job
tracker routes the parts of a job produced straight to Kafka. Routing is deterministic: the
same records from the same position give the same messages, so a part routed again after a
crash repeats batches that the appliers recognise by ``(job, seq)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any

import orjson

from bulkjobs.domain.identity import route
from bulkjobs.domain.records import Refused
from bulkjobs.kafka.topics import RecordBatch, encode

# A batch's AppliedBatch carries its records' attributes again plus a result per record, so a
# batch message stays well under the 1 MB message limit to leave its AppliedBatch room too.
MAX_MESSAGE_BYTES = 600 * 1024

# orjson writes at most 255 levels of nesting and a batch wraps each record in 3 of them (the
# batch, its items, the item): a record nested deeper is refused when its batch is encoded.
MAX_RECORD_DEPTH = 251

Emit = Callable[[int, bytes], None]  # (partition, encoded RecordBatch)


def _as_written(record: Any, text: bytes) -> Any:
    """The record as the JSON text it was parsed from, which a batch embeds without encoding it
    again (the same record to whoever decodes the batch); the parsed record itself when it may be
    nested deeper than a batch can be encoded, so that encoding it refuses it as usual."""
    # A text that holds more opening brackets than the depth limit is at least that long.
    if len(text) > MAX_RECORD_DEPTH and text.count(b"{") + text.count(b"[") > MAX_RECORD_DEPTH:
        return record
    return orjson.Fragment(text)


class Batcher:
    def __init__(self, *, job_id: str, tenant: str, record_type: str, action: str, partitions: int,
                 batch_records: int, batch_bytes: int, emit: Emit, first_index: int = 0,
                 first_seq: int = 0, sources: Sequence[int] | None = None, dry_run: bool = False) -> None:
        self.job_id, self.tenant, self.record_type, self.action = job_id, tenant, record_type, action
        self.dry_run = dry_run
        self.partitions = partitions
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self.emit = emit
        self.sources = sources  # a retry's: by record index, the index in the job retried
        self.next_index = first_index
        self.next_seq = first_seq
        self._pending: list[list[list[Any]]] = [[] for _ in range(partitions)]
        self._pending_bytes = [0] * partitions

    def add(self, records: list[Any], size: int, texts: Sequence[bytes] | None = None) -> None:
        """Route ``records`` (which came from ``size`` bytes of body), emitting every full batch.
        ``texts``, each record's own JSON text when the caller has it, is batched as is instead of
        encoding the parsed record again (``_as_written``)."""
        if not records:
            return
        estimate = max(1, size // len(records))  # per-record dumps would cost more than routing
        job_id, record_type, action, tenant = self.job_id, self.record_type, self.action, self.tenant
        partitions = self.partitions
        pending, pending_bytes = self._pending, self._pending_bytes
        limit_records, limit_bytes = self.batch_records, self.batch_bytes
        index = self.next_index
        for record, text in zip(records, repeat(None) if texts is None else texts, strict=False):
            if isinstance(record, Refused):
                partition = index % partitions
                item = record.item(index)
            else:
                partition, fresh_id = route(record_type, action, tenant, record, partitions, index, job_id)
                item = [index, fresh_id, record if text is None else _as_written(record, text)]
            index += 1
            batch = pending[partition]
            batch.append(item)
            pending_bytes[partition] += estimate
            if len(batch) >= limit_records or pending_bytes[partition] >= limit_bytes:
                self._flush(partition)
        self.next_index = index

    def close(self) -> None:
        """All records are in: emit the partly filled batches."""
        for partition in range(self.partitions):
            if self._pending[partition]:
                self._flush(partition)

    def _flush(self, partition: int) -> None:
        items, self._pending[partition], self._pending_bytes[partition] = self._pending[partition], [], 0
        self._write(partition, items)

    def _write(self, partition: int, items: list[list[Any]]) -> None:
        """Emit ``items`` as one batch; halve a batch that is too large or holds a record that
        cannot be encoded, down to the record that fails alone."""
        try:
            payload = self._encode(items)
        except orjson.JSONEncodeError:  # nested deeper than orjson writes (parsing allows more)
            payload, too_deep = b"", True
        else:
            too_deep = False
        if too_deep or len(payload) > MAX_MESSAGE_BYTES:
            if len(items) > 1:
                half = len(items) // 2
                self._write(partition, items[:half])
                self._write(partition, items[half:])
                return
            index, record = items[0][0], items[0][2]
            reason = (f"record is nested deeper than the limit of {MAX_RECORD_DEPTH} levels" if too_deep else
                      f"record is {len(orjson.dumps(record))} bytes, over the limit of {MAX_MESSAGE_BYTES} bytes")
            payload = self._encode([Refused(reason).item(index)])
        self.emit(partition, payload)
        self.next_seq += 1

    def _encode(self, items: list[list[Any]]) -> bytes:
        sources = None if self.sources is None else [self.sources[item[0]] for item in items]
        return encode(RecordBatch(job_id=self.job_id, tenant=self.tenant, type=self.record_type,
                                  action=self.action, seq=self.next_seq, items=items, sources=sources,
                                  dry_run=self.dry_run))

