"""Agent service association: set which services are enabled for each listed agent.

Each row names an agent (``agent`` object, external id ``agentId``) and its services,
separated by ``;`` (an empty cell disables them all). The template lists every agent with the
services it has now.
"""

from typing import Any

from bulkjobs.domain.job_types.base import Column, JobType, Values


def _attributes(values: Values) -> Values:
    return {"agentServices": values.get("agentServices") or []}


def _template_row(agent: dict[str, Any]) -> Values:
    attributes = agent["attributes"]
    return {"agentId": agent["external_id"], "userName": attributes.get("userName"),
            "agentServices": attributes.get("agentServices") or []}


JOB_TYPE = JobType(
    name="agent_service_association",
    description="Enable the listed services for each agent (services separated by ';'); others are disabled.",
    columns=(
        Column("agentId", required=True, description="the agent's id (its external id)"),
        Column("userName", description="the agent's login name (for reference; not written)"),
        Column("agentServices", type="list", required=True, empty_ok=True,
               description="services to enable, separated by ';' (empty: none)"),
    ),
    operation="update",
    object_type="agent",
    key="agentId",
    attributes=_attributes,
    template_row=_template_row,
)
