"""Files on disk in the data dir, which the API and the store share: the original files of CSV
jobs, one per job under ``DATA_DIR/uploads`` kept byte for byte, and the files export jobs
write, under ``DATA_DIR/exports/<job id>/``.

The API writes an upload while its request streams in and reads it back for downloads and the
results CSV. The store writes exports and removes them; the API only reads them.
"""

from __future__ import annotations

import contextlib
import re
import shutil
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

    def chunks(self, job_id: str, size: int = READ_CHUNK) -> Iterator[bytes]:
        with open(self.path(job_id), "rb") as file:
            while chunk := file.read(size):
                yield chunk

    def remove(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(job_id).unlink()


# Job ids of exports come from the API (hex), but any id a topic allows must stay a plain name.
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FILE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}-[0-9]{1,9}\.[a-z]{1,8}")


class ExportFiles:
    """An export job's files: ``exports/<job id>/<name>``, the name unique across tenants."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / "exports"

    def job_dir(self, job_id: str) -> Path:
        if not _JOB_ID.fullmatch(job_id):  # never let an id name a path elsewhere
            raise ValueError(f"not a job id: {job_id!r}")
        return self.directory / job_id

    def path(self, job_id: str, name: str) -> Path:
        if not _FILE_NAME.fullmatch(name):
            raise ValueError(f"not an export file name: {name!r}")
        return self.job_dir(job_id) / name

    def create(self, job_id: str, name: str) -> IO[bytes]:
        """A new file, replacing one of that name (an export started again writes it again)."""
        self.job_dir(job_id).mkdir(parents=True, exist_ok=True)
        return open(self.path(job_id, name), "wb")

    def remove_job(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def keep_only(self, job_id: str, names: set[str]) -> None:
        """Remove the job's files not in ``names`` (those deleted through the API)."""
        directory = self.job_dir(job_id)
        if not directory.is_dir():
            return
        for path in directory.iterdir():
            if path.name not in names:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
