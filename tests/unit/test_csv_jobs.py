"""Routing a saved CSV file's rows into a spool: a chunk at a time, whatever the file's size."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from bulkjobs.api.csv_jobs import CsvUpload, spool_rows
from bulkjobs.api.spool import BatchSpool
from bulkjobs.domain.csv_import import parse_settings
from bulkjobs.domain.identity import RESOURCES
from bulkjobs.store.files import UploadFiles

JOB = "0123abcd"


def test_a_csv_file_is_routed_without_holding_it_in_memory(tmp_path: Path) -> None:
    files = UploadFiles(tmp_path / "uploads")
    with files.create(JOB) as file:
        file.write(b"external_id,name\n")
        for start in range(0, 8_000, 1_000):
            file.write(b"".join(b"e-%d,%s\n" % (i, b"n" * 2000) for i in range(start, start + 1_000)))
    size = files.path(JOB).stat().st_size  # about 16 MB
    upload = CsvUpload(parse_settings({"operation": "insert", "object_type": "t"}), None, None, size, "utf-8")

    def new_spool(action: str) -> BatchSpool:
        return BatchSpool(job_id=JOB, tenant="tenant-a", record_type=RESOURCES, action=action, partitions=4,
                          batch_records=1000, batch_bytes=384 * 1024, directory=tmp_path / "spool")

    tracemalloc.start()
    try:
        plan, spool = spool_rows(files, JOB, upload, 1_000_000, new_spool)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert plan.action == "post" and spool.records == 8_000
    assert peak < size / 3, f"{peak} bytes at the peak for a file of {size}"
    spool.discard()
