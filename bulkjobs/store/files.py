"""The original files of CSV jobs, one per job under ``DATA_DIR/uploads``, kept byte for byte.

The API writes a file while its request streams in and reads it back for downloads and the
results CSV; the API and the store share the data dir.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import IO, Iterator

READ_CHUNK = 256 * 1024


class UploadFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, job_id: str) -> Path:
        if not job_id.isalnum():  # job ids are hex: never let one name a path elsewhere
            raise ValueError(f"not a job id: {job_id!r}")
        return self.directory / job_id

    def create(self, job_id: str) -> IO[bytes]:
        self.directory.mkdir(parents=True, exist_ok=True)
        return open(self.path(job_id), "wb")

    def exists(self, job_id: str) -> bool:
        return self.path(job_id).is_file()

    def size(self, job_id: str) -> int:
        return self.path(job_id).stat().st_size

    def chunks(self, job_id: str, size: int = READ_CHUNK) -> Iterator[bytes]:
        with open(self.path(job_id), "rb") as file:
            while chunk := file.read(size):
                yield chunk

    def remove(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(job_id).unlink()
