"""SSO migration: move agents' login names to their single-sign-on names.

Each row names an agent (``agent`` object, external id ``agentId``) and its SSO name; the agent's
``userName`` becomes the SSO name and ``ssoEnabled`` becomes true. The template lists the
agents not yet on SSO.
"""

from typing import Any

from bulkjobs.domain.job_types.base import Column, JobType, Values


def _attributes(values: Values) -> Values:
    return {"userName": values["ssoUserName"], "ssoEnabled": True}


def _template_row(agent: dict[str, Any]) -> Values:
    return {"agentId": agent["external_id"], "userName": agent["attributes"].get("userName"), "ssoUserName": None}


JOB_TYPE = JobType(
    name="sso_migration",
    description="Set each listed agent's login name to its SSO name and enable SSO for it.",
    columns=(
        Column("agentId", required=True, description="the agent's id (its external id)"),
        Column("userName", description="the current login name (for reference; not written)"),
        Column("ssoUserName", required=True, description="the SSO login name to set"),
    ),
    operation="update",
    object_type="agent",
    key="agentId",
    attributes=_attributes,
    template_conditions=(("ssoEnabled", False, True),),
    template_row=_template_row,
)
