"""The ``bulkjobs`` command.

Service commands run the parts: ``dev`` runs everything locally (and restarts a part that dies);
``api``, ``worker``, ``store`` run one part. Client commands talk to a running API through
``bulkjobs.client``: ``submit`` (with a live progress bar under ``--follow``), ``jobs``,
``status``, ``results``, ``cancel``, ``retry``. This module owns the arguments, what is printed and the
exit statuses.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import click
import orjson
from tqdm import tqdm

from bulkjobs.client import ApiError, BulkJobsClient, ClientSettings, Job, JobOptions, plan_upload
from bulkjobs.domain.jobs import STATUSES, SUCCEEDED, TERMINAL
from bulkjobs.logs import setup_logging
from bulkjobs.settings import Settings, new_webhook_secret
from bulkjobs.supervisor import Part, Supervisor

FAILED_EXIT = 1  # the job ended other than succeeded
ERROR_EXIT = 2  # a usage or HTTP error, as click's usage errors


PARTS = ("worker", "store", "api")
DEV_PREFIX = "bulkjobs dev: "

log = logging.getLogger("bulkjobs.dev")


def dev_reporter(settings: Settings) -> Callable[[str], None]:
    """How ``bulkjobs dev`` tells what it does: printed lines, or log lines with the JSON log format."""
    if settings.log_format == "text":
        return lambda line: print(line, flush=True)
    return lambda line: log.info(line.removeprefix(DEV_PREFIX))


def run_dev(settings: Settings) -> int:
    """Broker (unless one is configured), worker, store feeder and API, until Ctrl-C or SIGTERM.
    A part that dies is restarted (``bulkjobs.supervisor``)."""
    from bulkjobs.broker import free_port, start_broker

    report = dev_reporter(settings)
    env = dict(os.environ)
    broker = None
    if not os.environ.get("BULKJOBS_KAFKA_BROKERS"):
        broker = start_broker()
        env["BULKJOBS_KAFKA_BROKERS"] = broker.address
        report(f"{DEV_PREFIX}embedded Tansu broker on {broker.address}")
    if not settings.api_keys:
        key = "dev-" + secrets.token_urlsafe(16)
        env["BULKJOBS_API_KEYS"] = f"{key}=dev"
        report(f"{DEV_PREFIX}API key {key} (tenant 'dev'); set BULKJOBS_API_KEYS to choose your own")
    if not settings.webhook_secrets:
        webhook_secret = new_webhook_secret()
        env["BULKJOBS_WEBHOOK_SECRETS"] = f"dev={webhook_secret}"
        report(f"{DEV_PREFIX}webhook secret {webhook_secret} (tenant 'dev'): its callback_url webhooks are signed "
               "with it; set BULKJOBS_WEBHOOK_SECRETS to choose your own")
    env["BULKJOBS_PORT"] = str(settings.port)
    env["BULKJOBS_DATA_DIR"] = str(settings.data_dir)
    metrics_ports = {"worker": free_port(), "store": free_port()}
    report(f"{DEV_PREFIX}API on http://{settings.host}:{settings.port}/v1  (Ctrl-C stops everything)")
    report(f"{DEV_PREFIX}metrics on http://{settings.host}:{settings.port}/metrics (api), "
           + ", ".join(f"http://{settings.host}:{port}/metrics ({part})" for part, port in metrics_ports.items()))
    parts = [Part(part, [sys.executable, "-m", "bulkjobs", part]
                  + (["--metrics-port", str(metrics_ports[part])] if part in metrics_ports else []))
             for part in PARTS]
    supervisor = Supervisor(parts, env, log=report)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        supervisor.start()
        while not stopping:
            supervisor.check()
            time.sleep(0.2)
    finally:
        supervisor.stop()
        if broker is not None:
            broker.stop()
    return 0


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Bulk jobs over HTTP: run the service, or submit and follow jobs."""


# Service commands


def _service_settings(process: str, port: int | None = None, metrics_port: int | None = None) -> Settings:
    """The settings of a service command, with its logging set up (``BULKJOBS_LOG_FORMAT``)."""
    settings = Settings.from_env()
    setup_logging(process, settings.log_format)
    settings = replace(settings, port=port) if port else settings
    return replace(settings, metrics_port=metrics_port) if metrics_port else settings


metrics_port_option = click.option("--metrics-port", type=int,
                                   help="Serve /metrics on this port (default: BULKJOBS_METRICS_PORT; 0: not served)")


@cli.command()
@click.option("--port", type=int, help="API port (default 8080 or BULKJOBS_PORT)")
def dev(port: int | None) -> int:
    """Run broker, worker, store and API locally."""
    return run_dev(_service_settings("dev", port))


@cli.command()
@click.option("--port", type=int, help="API port (default 8080 or BULKJOBS_PORT)")
def api(port: int | None) -> int:
    """Run the HTTP API."""
    from bulkjobs.api.app import run_api

    run_api(_service_settings("api", port))
    return 0


@cli.command()
@metrics_port_option
def worker(metrics_port: int | None) -> int:
    """Run the Faust worker."""
    from bulkjobs.streams.worker import run_worker

    settings = _service_settings("worker", metrics_port=metrics_port)
    sys.argv = [sys.argv[0]]  # Faust's worker reads the command line too
    run_worker(settings)
    return 0


@cli.command()
@metrics_port_option
def store(metrics_port: int | None) -> int:
    """Run the process that feeds the SQLite view."""
    from bulkjobs.store.feeder import run_feeder

    run_feeder(_service_settings("store", metrics_port=metrics_port))
    return 0


# Client commands


def _client_settings(url: str | None, api_key: str | None) -> ClientSettings:
    env = ClientSettings.from_env()
    settings = ClientSettings(url=url or env.url, api_key=api_key or env.api_key)
    if not settings.api_key:
        raise click.UsageError("no API key: set BULKJOBS_API_KEY or pass --api-key")
    return settings


def client_command(func: Callable[..., int]) -> click.Command:
    """A client command: adds ``--url`` and ``--api-key`` and passes the ClientSettings first."""

    @click.option("--url", metavar="URL", help="API address [env BULKJOBS_URL, default http://127.0.0.1:8080]")
    @click.option("--api-key", metavar="KEY", help="API key [env BULKJOBS_API_KEY]")
    @functools.wraps(func)
    def command(url: str | None, api_key: str | None, **kwargs: Any) -> int:
        return func(_client_settings(url, api_key), **kwargs)

    return cli.command()(command)


def _call(settings: ClientSettings, work: Callable[[BulkJobsClient], Awaitable[int]]) -> int:
    """Run ``work`` with a client; an error answer or an unreachable API is reported and exits 2."""

    async def session() -> int:
        async with BulkJobsClient.open(settings) as client:
            return await work(client)

    try:
        return asyncio.run(session())
    except ApiError as exc:
        click.echo(f"error: {exc.code}: {exc.message}", err=True)
    except aiohttp.ClientError as exc:
        click.echo(f"error: cannot reach {settings.url}: {exc}", err=True)
    return ERROR_EXIT


def exit_status(job: Job) -> int:
    return 0 if job["status"] == SUCCEEDED else FAILED_EXIT


def summary(job: Job) -> str:
    counts = job["counts"]
    outcomes = ", ".join(f"{name} {counts[name]}" for name in ("created", "updated", "deleted", "skipped", "failed"))
    return f"{job['id']} {job['status']}: {counts['processed']}/{counts['total']} records ({outcomes})"


def _report(job: Job) -> None:
    click.echo(summary(job))
    if error := job.get("error"):
        click.echo(f"error: {error['code']}: {error['message']}")


async def _follow(client: BulkJobsClient, job: Job) -> Job:
    """Show the job's progress until it ends; the job as it ended (or as it is, if the socket broke)."""
    counts = job["counts"]
    last = job
    # initial: records done before we looked do not count in the rate and the ETA.
    with tqdm(total=counts["total"], initial=counts["processed"], unit="records", file=sys.stderr) as bar:
        async with aclosing(client.live(job["id"])) as changes:
            async for last in changes:
                bar.total = last["counts"]["total"]
                bar.update(last["counts"]["processed"] - bar.n)
                if last["status"] in TERMINAL:
                    break
    if last["status"] not in TERMINAL:
        last = await client.job(job["id"])
    return last


@client_command
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--type", help="resources or relationships (a JSON array or NDJSON)")
@click.option("--action", help="post, update, delete, external_id_set, ... (a JSON array or NDJSON)")
@click.option("--description", help="free text shown with the job")
@click.option("--operation", help="insert, update, upsert or delete (CSV)")
@click.option("--object-type", help="the type of the objects written (CSV)")
@click.option("--job-type", help="objects, sso_migration or agent_service_association (CSV; detected if not given)")
@click.option("--find-by", help="the field that identifies objects (CSV; default external_id)")
@click.option("--field-mappings", metavar="JSON", help='[{"api_name", "index", "default_value"?, "type"?}, ...] (CSV)')
@click.option("--character-encoding", help="the file's encoding (CSV; detected if not given)")
@click.option("--dry-run", is_flag=True, help="check every record and report what the job would do; change nothing")
@click.option("--follow", is_flag=True, help="show a progress bar until the job ends; exit 0 only if it succeeded")
def submit(settings: ClientSettings, file: Path, follow: bool, dry_run: bool, **job_settings: str | None) -> int:
    """Submit a file as a job and print the job's id.

    FILE is a .csv, .json (an envelope or a bare array), .ndjson or .jsonl file. It is streamed
    from disk. With --follow, a progress bar runs until the job ends, then the final counts are
    printed: the exit status is 0 if the job succeeded, 1 if it ended otherwise.
    """
    try:
        upload = plan_upload(file, JobOptions(**job_settings, dry_run="true" if dry_run else None))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc

    async def work(client: BulkJobsClient) -> int:
        return await _accepted(client, await client.submit(upload), follow)

    return _call(settings, work)


async def _accepted(client: BulkJobsClient, job: Job, follow: bool) -> int:
    """Print the id of a job just accepted; with ``follow``, its progress until it ends, then
    its counts, and exit by how it ended."""
    click.echo(job["id"])
    if not follow:
        return 0
    job = await _follow(client, job)
    _report(job)
    return exit_status(job)


def _kind(job: Job) -> str:
    return job.get("job_type") or f"{job['type']}/{job['action']}"


def format_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
                     for row in rows)


@client_command
@click.option("--status", type=click.Choice(STATUSES), help="only jobs with this status")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="at most this many, newest first")
def jobs(settings: ClientSettings, status: str | None, limit: int) -> int:
    """List jobs, newest first."""

    async def work(client: BulkJobsClient) -> int:
        page = await client.jobs(status, limit)
        rows = [("ID", "STATUS", "KIND", "PROCESSED", "CREATED")] + [
            (job["id"], job["status"], _kind(job), f"{job['counts']['processed']}/{job['counts']['total']}",
             job["created_at"])
            for job in page["items"]
        ]
        click.echo(format_table(rows))
        if page["total"] > len(page["items"]):
            click.echo(f"({len(page['items'])} of {page['total']} jobs; --limit shows more)")
        return 0

    return _call(settings, work)


@client_command
@click.argument("job_id")
def status(settings: ClientSettings, job_id: str) -> int:
    """Print a job as JSON."""

    async def work(client: BulkJobsClient) -> int:
        click.echo(orjson.dumps(await client.job(job_id), option=orjson.OPT_INDENT_2).decode())
        return 0

    return _call(settings, work)


async def _ndjson(results: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for result in results:
        yield orjson.dumps(result, option=orjson.OPT_APPEND_NEWLINE)


@client_command
@click.argument("job_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="write to this file instead of stdout")
def results(settings: ClientSettings, job_id: str, output: str) -> int:
    """Write a job's results.

    For a CSV job, its results.csv (_status, _id, _error, then the rows sent); for another
    job, one JSON result per line, in record order.
    """

    async def work(client: BulkJobsClient) -> int:
        job = await client.job(job_id)
        chunks = client.results_csv(job_id) if job.get("file") else _ndjson(client.results(job_id))
        with click.open_file(output, "wb") as out:
            async for chunk in chunks:
                out.write(chunk)
        return 0

    return _call(settings, work)


@client_command
@click.argument("job_id")
def cancel(settings: ClientSettings, job_id: str) -> int:
    """Cancel a job that has not ended."""

    async def work(client: BulkJobsClient) -> int:
        job = await client.cancel(job_id)  # the job as the next read shows it, or as it was (a 202)
        click.echo(f"{job['id']} " + ("cancelled" if job["status"] == "cancelled" else "cancel requested"))
        return 0

    return _call(settings, work)


@client_command
@click.argument("job_id")
@click.option("--include-skipped", is_flag=True,
              help="retry the skipped records too (and a CSV job's rows never applied)")
@click.option("--follow", is_flag=True, help="show a progress bar until the retry ends; exit 0 only if it succeeded")
def retry(settings: ClientSettings, job_id: str, include_skipped: bool, follow: bool) -> int:
    """Retry a finished job's failed records as a new job, and print its id.

    The new job's results carry source_index, each record's index in JOB_ID. --follow works as
    for submit.
    """

    async def work(client: BulkJobsClient) -> int:
        return await _accepted(client, await client.retry(job_id, include_skipped), follow)

    return _call(settings, work)


def main(argv: list[str] | None = None) -> int:
    """Run the ``bulkjobs`` command; its exit status."""
    try:
        return cli.main(args=argv, prog_name="bulkjobs", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
