"""A job's ``callback_url`` at the door: a well-formed http(s) URL (``domain.webhooks``), a
tenant with a webhook secret to sign with, and, with ``BULKJOBS_WEBHOOK_DENY_PRIVATE``, a host
that is, and resolves to, public addresses only (``bulkjobs.targets``; resolved in the
executor, so the event loop never waits on DNS)."""

from __future__ import annotations

from typing import Any

from bulkjobs.domain.webhooks import CALLBACK_URL_NOT_ALLOWED, WEBHOOK_SECRET_MISSING, check_callback_url
from bulkjobs.errors import BadRequest
from bulkjobs.settings import Settings
from bulkjobs.targets import PrivateTarget, check_target


async def check_callback(settings: Settings, tenant: str, value: Any) -> str:
    """The checked URL; 400 ``invalid_callback_url``, ``field_too_long``,
    ``webhook_secret_missing`` or ``callback_url_not_allowed``."""
    url = check_callback_url(value)
    if tenant not in settings.webhook_secrets:
        raise BadRequest(f"the tenant {tenant!r} has no webhook secret to sign its webhooks with: set one in "
                         "BULKJOBS_WEBHOOK_SECRETS to use callback_url", field="callback_url",
                         code=WEBHOOK_SECRET_MISSING)
    if settings.webhook_deny_private:
        try:
            await check_target(url)
        except PrivateTarget as exc:
            raise BadRequest(str(exc), field="callback_url", code=CALLBACK_URL_NOT_ALLOWED) from None
    return url
