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
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from bulkjobs.domain.identity import is_job_id

READ_CHUNK = 256 * 1024


def _checked(job_id: str) -> str:
    """A job id, as a name in a directory: the one rule every job id follows keeps it a plain
    name, so an id can never name a path elsewhere."""
    if not is_job_id(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return job_id


class UploadFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, job_id: str) -> Path:
        return self.directory / _checked(job_id)

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


_FILE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}-[0-9]{1,9}\.[a-z]{1,8}")


class ExportFiles:
    """An export job's files: ``exports/<job id>/<name>``, the name unique across tenants."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / "exports"

    def job_dir(self, job_id: str) -> Path:
        return self.directory / _checked(job_id)

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
