"""The generic import: any object type, any columns, the operation the request names."""

from bulkjobs.domain.job_types.base import JobType

JOB_TYPE = JobType(
    name="objects",
    description="Import objects of any type: each column is an attribute; the find_by column "
                "(external_id by default) identifies the object.",
)
