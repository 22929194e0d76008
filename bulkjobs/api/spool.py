"""A job's batches, routed and encoded, spooled to a temporary file until the body is accepted.

Nothing is published until the whole body has been read and accepted, so a body that turns
out malformed or too large halfway leaves no trace in Kafka.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from bulkjobs.api.array_splitter import Chunk
from bulkjobs.kafka.batching import Batcher

_HEADER = struct.Struct("<HI")  # partition, payload length
_HELD = struct.Struct("<II")  # body bytes, JSON length


class BatchSpool:
    def __init__(self, *, job_id: str, tenant: str, record_type: str, action: str, partitions: int,
                 batch_records: int, batch_bytes: int, directory: Path,
                 sources: Sequence[int] | None = None) -> None:
        self.record_type, self.action, self.partitions = record_type, action, partitions
        directory.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=directory)
        self._batcher = Batcher(job_id=job_id, tenant=tenant, record_type=record_type, action=action,
                                partitions=partitions, batch_records=batch_records, batch_bytes=batch_bytes,
                                emit=self._write, sources=sources)

    @property
    def records(self) -> int:
        return self._batcher.next_index

    @property
    def batches(self) -> int:
        return self._batcher.next_seq

    def add(self, records: list[Any], size: int, texts: list[bytes] | None = None) -> None:
        """Route ``records`` (which came from ``size`` bytes of body; ``texts``: each one's JSON)."""
        self._batcher.add(records, size, texts)

    def close(self) -> None:
        """All records are in: write the partly filled batches and rewind for reading."""
        self._batcher.close()
        self._file.seek(0)

    def _write(self, partition: int, payload: bytes) -> None:
        self._file.write(_HEADER.pack(partition, len(payload)))
        self._file.write(payload)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """(partition, encoded RecordBatch) for every spooled batch, in order."""
        while header := self._file.read(_HEADER.size):
            partition, length = _HEADER.unpack(header)
            yield partition, self._file.read(length)

    def discard(self) -> None:
        self._file.close()


class HeldChunks:
    """Chunks of records parsed before the job's type and action were known (an envelope whose
    data comes first), kept on disk as the JSON array they came from until they can be routed,
    so that memory does not grow with the body."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=directory)
        self.records = 0

    def add(self, chunk: Chunk) -> None:
        if chunk.raw is None:
            raise ValueError("only chunks parsed from a JSON array can be held")
        self._file.write(_HELD.pack(chunk.size, len(chunk.raw)))
        self._file.write(chunk.raw)
        self.records += len(chunk.records)

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        """(JSON array, body bytes) of every held chunk, in order."""
        self._file.seek(0)
        while header := self._file.read(_HELD.size):
            size, length = _HELD.unpack(header)
            yield self._file.read(length), size

    def discard(self) -> None:
        self._file.close()
