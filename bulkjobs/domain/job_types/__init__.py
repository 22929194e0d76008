"""The registry of job types. Adding one is a module with a ``JOB_TYPE`` and a line here."""

from __future__ import annotations

from bulkjobs.domain.job_types import agent_service_association, objects, sso_migration
from bulkjobs.domain.job_types.base import (
    COLUMN_TYPES,
    Column,
    Condition,
    JobType,
    Values,
)

GENERIC = objects.JOB_TYPE
JOB_TYPES: dict[str, JobType] = {
    job_type.name: job_type
    for job_type in (objects.JOB_TYPE, sso_migration.JOB_TYPE, agent_service_association.JOB_TYPE)
}


def detect(names: list[str]) -> JobType:
    """The job type whose columns a header (or the mapped names) matches; the generic one if none does."""
    for job_type in JOB_TYPES.values():
        if not job_type.generic and job_type.mismatch(names) == ([], []):
            return job_type
    return GENERIC


__all__ = ["COLUMN_TYPES", "Column", "Condition", "GENERIC", "JOB_TYPES", "JobType", "Values", "detect"]
