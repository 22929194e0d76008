"""A job's batches, routed and encoded, spooled to a temporary file until the body is accepted.

Nothing is published until the whole body has been read and accepted, so a body that turns
out malformed or too large halfway leaves no trace in Kafka.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from bulkjobs.streams.batching import Batcher

_HEADER = struct.Struct("<HI")  # partition, payload length


class BatchSpool:
    def __init__(self, *, job_id: str, tenant: str, kind: str, action: str, partitions: int,
                 batch_records: int, batch_bytes: int, directory: Path) -> None:
        self.kind, self.action, self.partitions = kind, action, partitions
        directory.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=directory)
        self._batcher = Batcher(job_id=job_id, tenant=tenant, kind=kind, action=action, partitions=partitions,
                                batch_records=batch_records, batch_bytes=batch_bytes, emit=self._write)

    @property
    def records(self) -> int:
        return self._batcher.next_index

    @property
    def batches(self) -> int:
        return self._batcher.next_seq

    def add(self, records: list[Any], size: int) -> None:
        """Route ``records`` (which came from ``size`` bytes of body)."""
        self._batcher.add(records, size)

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
