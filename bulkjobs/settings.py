"""The one settings object, read from ``BULKJOBS_*`` environment variables at the entry points."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from bulkjobs.logs import checked_format


def _pairs(text: str) -> Iterator[tuple[str, str, str]]:
    """The entries of ``a=b,c=d``, each as (entry, a, b) stripped; blanks are skipped. Only the
    first ``=`` splits an entry (a base64 value may end in ``=``); without one, b is empty."""
    for entry in text.split(","):
        entry = entry.strip()
        if entry:
            left, _, right = entry.partition("=")
            yield entry, left.strip(), right.strip()


def parse_api_keys(text: str) -> dict[str, str]:
    """``key=tenant,key2=tenant2`` -> {key: tenant}; blanks are ignored."""
    keys: dict[str, str] = {}
    for entry, key, tenant in _pairs(text):
        if not key or not tenant:
            raise ValueError(f"BULKJOBS_API_KEYS entry {entry!r} is not key=tenant")
        keys[key] = tenant
    return keys


WEBHOOK_SECRET_PREFIX = "whsec_"  # the Standard Webhooks form of a secret: whsec_<base64 of its bytes>


def parse_webhook_secrets(text: str) -> dict[str, str]:
    """``tenant=whsec_...,tenant2=whsec_...`` -> {tenant: secret}; blanks are ignored."""
    secrets: dict[str, str] = {}
    for _, tenant, secret in _pairs(text):
        if not tenant or not _is_webhook_secret(secret):
            raise ValueError(f"a BULKJOBS_WEBHOOK_SECRETS entry for {tenant!r} is not "
                             f"tenant={WEBHOOK_SECRET_PREFIX}<base64 of at least 16 bytes>")
        secrets[tenant] = secret
    return secrets


def new_webhook_secret() -> str:
    """A random secret in the Standard Webhooks form (24 random bytes)."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(os.urandom(24)).decode()


def _is_webhook_secret(secret: str) -> bool:
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        return False
    try:
        key = base64.b64decode(secret[len(WEBHOOK_SECRET_PREFIX):] + "==", validate=False)
    except binascii.Error:
        return False
    return len(key) >= 16


def checked_retention(seconds: int) -> int:
    """``seconds`` if it is a job retention (0 keeps jobs forever); a ValueError otherwise."""
    if seconds < 0:
        raise ValueError(f"BULKJOBS_JOB_RETENTION must be 0 (keep jobs forever) or more seconds, not {seconds}")
    return seconds


@dataclass(frozen=True)
class Settings:
    kafka_brokers: str = "127.0.0.1:9092"
    data_dir: Path = Path("data")
    api_keys: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8080
    partitions: int = 8
    replication_factor: int = 1
    max_records: int = 1_000_000
    max_body_bytes: int = 256 * 1024 * 1024
    max_upload_bytes: int = 256 * 1024 * 1024
    batch_records: int = 1000
    batch_bytes: int = 384 * 1024
    topic_prefix: str = "bulkjobs"
    session_timeout: float = 6.0
    heartbeat_interval: float = 2.0
    worker_heartbeat_seconds: float = 2.0
    # A job whose submitter (the API) sends no beat or seal for this long while it is still
    # sending the job's batches fails as upload_interrupted; the API beats every fifth of it.
    upload_timeout: float = 30.0
    # Jobs a tenant may have queued or processing at once (Zendesk's cap); one more is refused.
    max_active_jobs: int = 1000
    # Seconds a finished job (any terminal status) is kept after it completed; then the service
    # deletes it as a DELETE would. 0 keeps jobs forever. 7 days, as Salesforce Bulk API 2.0.
    job_retention: int = 7 * 24 * 3600
    # The port the worker or the store serves /metrics on (each process its own); 0: not served.
    # The API serves /metrics on its own port, always.
    metrics_port: int = 0
    # Seconds an Idempotency-Key's answer is kept (api.idempotency): a repeat after it makes a new job.
    idempotency_ttl: float = 86400.0
    # Seconds an unanswered Idempotency-Key claim outlives its API process's last renewal (the
    # process died mid-upload); the owner renews it every third of this while it receives the body.
    idempotency_lease: float = 30.0
    log_format: str = "text"  # or "json": one JSON object per line (bulkjobs.logs)
    # Completion webhooks (domain.webhooks, streams.webhooks): each tenant's signing secret; a
    # tenant without one may not name a callback_url.
    webhook_secrets: Mapping[str, str] = field(default_factory=dict)
    webhook_deny_private: bool = False  # refuse callback targets that are not globally routable
    webhook_backoff: float = 5.0  # seconds before the first retry, doubling after each failure
    webhook_backoff_cap: float = 3600.0  # the longest wait between two attempts
    webhook_max_age: float = 24 * 3600.0  # attempts go on until the job ended this long ago
    # A snapshot of a partition of the worker's object index is written after this many changes
    # (AppliedBatch messages), or this many seconds after the last one if anything changed (once
    # the worker is idle: streams.snapshots).
    snapshot_changes: int = 1000
    snapshot_seconds: float = 60.0
    # retention.ms of the topics created from now on, in seconds (0: kept for ever): job-events,
    # changes and dead-letters; and the batches topic's (held batches are read back from their
    # copies in the compacted held topic, so only a batch not yet consumed needs it).
    topic_retention: int = 7 * 24 * 3600
    batches_retention: int = 7 * 24 * 3600

    @property
    def db_path(self) -> Path:
        return self.data_dir / "bulkjobs.db"

    @property
    def idempotency_path(self) -> Path:
        """The API processes' shared Idempotency-Key table (not the view: the store never writes it)."""
        return self.data_dir / "idempotency.db"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        def get(name: str) -> str | None:
            return env.get(f"BULKJOBS_{name}") or None

        base = cls()
        values: dict[str, object] = {}
        if (v := get("KAFKA_BROKERS")) is not None:
            values["kafka_brokers"] = v
        if (v := get("DATA_DIR")) is not None:
            values["data_dir"] = Path(v)
        if (v := get("API_KEYS")) is not None:
            values["api_keys"] = parse_api_keys(v)
        if (v := get("HOST")) is not None:
            values["host"] = v
        if (v := get("TOPIC_PREFIX")) is not None:
            values["topic_prefix"] = v
        if (v := get("LOG_FORMAT")) is not None:
            values["log_format"] = checked_format(v)
        if (v := get("WEBHOOK_SECRETS")) is not None:
            values["webhook_secrets"] = parse_webhook_secrets(v)
        if (v := get("WEBHOOK_DENY_PRIVATE")) is not None:
            values["webhook_deny_private"] = v.strip().lower() in ("1", "true", "yes", "on")
        for name, attr in (
            ("PORT", "port"),
            ("PARTITIONS", "partitions"),
            ("REPLICATION_FACTOR", "replication_factor"),
            ("MAX_RECORDS", "max_records"),
            ("MAX_BODY_BYTES", "max_body_bytes"),
            ("MAX_UPLOAD_BYTES", "max_upload_bytes"),
            ("BATCH_RECORDS", "batch_records"),
            ("BATCH_BYTES", "batch_bytes"),
            ("METRICS_PORT", "metrics_port"),
            ("MAX_ACTIVE_JOBS", "max_active_jobs"),
            ("SNAPSHOT_CHANGES", "snapshot_changes"),
            ("TOPIC_RETENTION", "topic_retention"),
            ("BATCHES_RETENTION", "batches_retention"),
        ):
            if (v := get(name)) is not None:
                values[attr] = int(v)
        if (v := get("JOB_RETENTION")) is not None:
            values["job_retention"] = checked_retention(int(v))
        for name, attr in (
            ("SESSION_TIMEOUT", "session_timeout"),
            ("HEARTBEAT_INTERVAL", "heartbeat_interval"),
            ("UPLOAD_TIMEOUT", "upload_timeout"),
            ("WEBHOOK_BACKOFF", "webhook_backoff"),
            ("WEBHOOK_BACKOFF_CAP", "webhook_backoff_cap"),
            ("WEBHOOK_MAX_AGE", "webhook_max_age"),
            ("IDEMPOTENCY_TTL", "idempotency_ttl"),
            ("IDEMPOTENCY_LEASE", "idempotency_lease"),
            ("SNAPSHOT_SECONDS", "snapshot_seconds"),
        ):
            if (v := get(name)) is not None:
                values[attr] = float(v)
        return replace(base, **values)  # type: ignore[arg-type]
