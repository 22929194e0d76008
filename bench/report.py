"""The bench's report: a table of every job's figures beside the goals of issue 13 (and the CPU
each process spent per record), and notes below it."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.measure import JobRun, histogram_pct, pct

# Goals from issue 13 (performance), defined for 1,000,000 records; checked on the two jobs of that
# size on one worker (JSON and NDJSON), the poll latency on every job.
GOAL_RECORDS = 1_000_000
GOAL_RATIO = 1.0  # end to end, as a multiple of the plain script's rate
GOAL_202_S = 5.0
GOAL_API_RSS_MB = 200.0
GOAL_POLL_P99_MS = 20.0
GOAL_CPU_US = 25.0  # CPU of every process of the stack per record
GOAL_TWO_WORKERS_CPU = 1.1  # worker CPU of a job on two workers, as a multiple of one worker's
GOAL_GROWTH_RATIO = 0.9  # a small job's rate with the large jobs' objects in the view, over an empty view's
GOAL_LABELS = ("JSON", "NDJSON")
EMPTY_VIEW = "empty view"  # in the label of the small job run before any other
# The NDJSON jobs that compare one worker with two: the view grows by a job's objects between
# two of them, and a job's CPU grows with the view (the store's, and on two shared cores every
# process's with it), so the two-worker job is judged against the mean of the one-worker jobs
# run just before it and just after it.
ONE_WORKER_BEFORE, TWO_WORKERS, ONE_WORKER_AFTER = "NDJSON 1w before", "NDJSON 2 workers", "NDJSON 1w after"
MEASURED = ("bench", "api", "worker", "worker2", "store", "broker")  # bench: this client
STACK = MEASURED[1:]


@dataclass
class Table:
    """Rows of (name, a value per job, goal, met), and the goals missed."""

    at_scale: bool  # goals are only judged at GOAL_RECORDS; below, a verdict carries a '*'
    rows: list[tuple[str, list[str], str, str]] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)

    def row(self, name: str, values: list[str], goal: str = "", met: str = "") -> None:
        self.rows.append((name, values, goal, met))

    def verdict(self, ok: bool, what: str) -> str:
        if not ok:
            self.misses.append(what)
        text = "ok" if ok else "MISS"
        return text if self.at_scale else text + "*"

    def lines(self, heads: list[str]) -> list[str]:
        width = max(14, *(len(h) for h in heads)) + 2
        name_w = max(len(r[0]) for r in self.rows) + 2
        sep = "-" * (name_w + width * len(heads) + 26)
        lines = [sep, "".ljust(name_w) + "".join(h.rjust(width) for h in heads) + "   goal (issue 13)".ljust(20)
                 + "met", sep]
        for name, values, goal, met in self.rows:
            lines.append(name.ljust(name_w) + "".join(v.rjust(width) for v in values) + "   " + goal.ljust(17) + met)
        lines.append(sep)
        return lines


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def cpu_us_per_record(run: JobRun, name: str) -> float | None:
    """CPU microseconds ``name`` spent per record of the job, POST to terminal (which is also its
    CPU seconds per 1M records); None for a process the job did not have."""
    if name not in run.cpu_upload:
        return None
    return 1e6 * (run.cpu_upload[name] + run.cpu_process[name]) / run.records


def stack_us_per_record(run: JobRun) -> float:
    """CPU microseconds per record of every process of the stack together."""
    return sum(us for name in STACK if (us := cpu_us_per_record(run, name)) is not None)


def core_per_process_rate(run: JobRun) -> float:
    """The rate the stack would reach with a core for each process: its busiest process's."""
    return 1e6 / max(us for name in STACK if (us := cpu_us_per_record(run, name)) is not None)


def print_table(n: int, runs: list[JobRun], base: list[dict[str, float]], elapsed: float) -> list[str]:
    """Print the table and the notes; the goals missed."""
    base_rate = statistics.mean(b["rate"] for b in base)
    base_us = statistics.mean(b["us_per_record"] for b in base)
    table = Table(at_scale=n >= GOAL_RECORDS)
    goal_runs = [r for r in runs if r.label in GOAL_LABELS]
    _timing_rows(table, runs, goal_runs, base_rate)
    _poll_rows(table, runs)
    _rss_rows(table, runs, goal_runs)
    _cpu_rows(table, runs, goal_runs, base_rate, base_us)
    lines = table.lines([r.label for r in runs])
    sep = lines[0]
    lines += _baseline_notes(base, base_rate, base_us) + _comparisons(table, runs)
    lines.append("CPU-s: CPU seconds of each process from POST start to the 202 / from the 202 to terminal, and "
                 "the latter as % of one core (bench = this client). CPU us/record: POST start to terminal, the same "
                 "figure as CPU-s per 1M records. Wall: "
                 + ", ".join(f"{r.label} {r.s_to_202:.1f} / {r.s_to_terminal - r.s_to_202:.1f} s" for r in runs))
    if not table.at_scale:
        lines.append(f"* goals are defined for 1,000,000 records; this run had {n:,}")
    lines.append(f"bench wall time {elapsed:.0f} s; figures are from a shared, noisy machine")
    lines.append(sep)
    print("\n".join(lines), flush=True)
    return table.misses


def _all(runs: list[JobRun], ok: Callable[[JobRun], bool]) -> bool:
    return all(ok(r) for r in runs)


def _timing_rows(table: Table, runs: list[JobRun], goal_runs: list[JobRun], base_rate: float) -> None:
    table.row("records", [f"{r.records:,}" for r in runs])
    table.row("body MB", [f"{r.body_mb:.1f}" for r in runs])
    table.row("s to 202", [f"{r.s_to_202:.2f}" for r in runs], f"<= {GOAL_202_S:.0f} s",
              table.verdict(_all(goal_runs, lambda r: r.s_to_202 <= GOAL_202_S), f"202 within {GOAL_202_S:.0f} s"))
    table.row("s to counts.processed=N", [fmt(r.s_all_processed, ".2f") for r in runs])
    table.row("s to terminal", [f"{r.s_to_terminal:.2f}" for r in runs])
    table.row("records/s end to end", [f"{r.rate:,.0f}" for r in runs])
    table.row("x script (records/s)", [f"{r.rate / base_rate:.2f}" for r in runs], f">= {GOAL_RATIO:.1f}",
              table.verdict(_all(goal_runs, lambda r: r.rate / base_rate >= GOAL_RATIO),
                            f"end to end >= {GOAL_RATIO:.1f}x the script"))


def _poll_rows(table: Table, runs: list[JobRun]) -> None:
    table.row("poll p50 ms (after 202)", [f"{pct(r.polls, 50):.1f}" for r in runs])
    table.row("poll p99 ms (after 202)", [f"{pct(r.polls, 99):.1f}" for r in runs], f"< {GOAL_POLL_P99_MS:.0f} ms",
              table.verdict(_all(runs, lambda r: pct(r.polls, 99) < GOAL_POLL_P99_MS),
                            f"poll p99 < {GOAL_POLL_P99_MS:.0f} ms"))
    table.row("poll p99 ms, API's own", [f"<= {1000 * histogram_pct(r.server_polls, 99):.0f}" for r in runs],
              "(its histogram)")
    table.row("poll max ms / polls", [f"{max(r.polls):.0f} / {len(r.polls)}" for r in runs])
    table.row("poll p50/p99 ms in POST",
              [f"{pct(r.upload_polls, 50):.0f} / {pct(r.upload_polls, 99):.0f}" for r in runs], "(info)")


def _rss_rows(table: Table, runs: list[JobRun], goal_runs: list[JobRun]) -> None:
    for name in STACK:
        if not any(name in r.peak_rss for r in runs):
            continue
        goal, met = "", ""
        if name == "api":
            goal = f"< {GOAL_API_RSS_MB:.0f} MB"
            met = table.verdict(_all(goal_runs, lambda r: r.peak_rss["api"] < GOAL_API_RSS_MB),
                                f"API peak RSS < {GOAL_API_RSS_MB:.0f} MB")
        table.row(f"peak RSS MB {name}", [fmt(r.peak_rss.get(name), ".0f") for r in runs], goal, met)


def _cpu_cell(r: JobRun, name: str) -> str:
    if name not in r.cpu_upload:
        return "-"
    share = 100 * r.cpu_process[name] / (r.s_to_terminal - r.s_to_202)
    return f"{r.cpu_upload[name]:.1f} / {r.cpu_process[name]:.1f} {share:3.0f}%"


def _cpu_rows(table: Table, runs: list[JobRun], goal_runs: list[JobRun], base_rate: float, base_us: float) -> None:
    for name in MEASURED:
        if any(name in r.cpu_upload for r in runs):
            table.row(f"CPU-s {name} (POST / after, %)", [_cpu_cell(r, name) for r in runs])
    for name in STACK:
        if any(name in r.cpu_upload for r in runs):
            table.row(f"CPU us/record {name}", [fmt(cpu_us_per_record(r, name), ".1f") for r in runs])
    table.row(f"CPU us/record all (script {base_us:.1f})", [f"{stack_us_per_record(r):.1f}" for r in runs],
              f"<= {GOAL_CPU_US:.0f} us",
              table.verdict(_all(goal_runs, lambda r: stack_us_per_record(r) <= GOAL_CPU_US),
                            f"all processes <= {GOAL_CPU_US:.0f} us of CPU per record"))
    table.row("x script (CPU per record)", [f"{base_us / stack_us_per_record(r):.2f}" for r in runs])
    table.row("records/s, a core per process", [f"{core_per_process_rate(r):,.0f}" for r in runs], "(from CPU)")
    table.row("  x script", [f"{core_per_process_rate(r) / base_rate:.2f}" for r in runs])


def _baseline_notes(base: list[dict[str, float]], base_rate: float, base_us: float) -> list[str]:
    b_text = ", ".join(f"{b['rate']:,.0f} ({b['seconds']:.2f} s, parse {b['parse_s']:.2f} s, "
                       f"{b['us_per_record']:.1f} us of CPU per record)" for b in base)
    return [f"script (stdlib json.load; objects keyed by (type, external_id) upserted + result rows, executemany "
            f"in 5,000-row transactions), records/s: {b_text}",
            f"  mean {base_rate:,.0f} records/s ({base_us:.1f} us of CPU per record) is the reference for "
            "'x script'"]


def _worker_cpu(run: JobRun) -> float:
    """CPU seconds of every worker of the job together, POST to terminal."""
    return sum(run.cpu_upload[name] + run.cpu_process[name] for name in ("worker", "worker2") if name in run.cpu_upload)


def _comparisons(table: Table, runs: list[JobRun]) -> list[str]:
    """One worker against two (NDJSON), a small job on an empty view against the same job once the
    view holds the large jobs' objects, and CSV against JSON of the same records."""
    lines = []
    labelled = {r.label: r for r in runs}
    if {ONE_WORKER_BEFORE, TWO_WORKERS, ONE_WORKER_AFTER} <= labelled.keys():
        before, two, after = labelled[ONE_WORKER_BEFORE], labelled[TWO_WORKERS], labelled[ONE_WORKER_AFTER]
        cpu_before, cpu_after = _worker_cpu(before), _worker_cpu(after)
        cpu_one, cpu_two = (cpu_before + cpu_after) / 2, _worker_cpu(two)
        rate_one = (before.rate + after.rate) / 2
        met = table.verdict(cpu_two <= GOAL_TWO_WORKERS_CPU * cpu_one,
                            f"two workers' CPU <= {GOAL_TWO_WORKERS_CPU}x one's")
        lines.append(f"1 vs 2 workers (NDJSON; one worker: the mean of the jobs just before the second joined and "
                     f"just after it left): {rate_one:,.0f} vs {two.rate:,.0f} records/s "
                     f"({two.rate / rate_one:.2f}x); worker CPU {cpu_one:.1f} ({cpu_before:.1f} before, "
                     f"{cpu_after:.1f} after) vs {cpu_two:.1f} s "
                     f"({cpu_two / cpu_one:.2f}x, goal <= {GOAL_TWO_WORKERS_CPU}x: {met})")
    empty = next((r for r in runs if r.label.endswith(EMPTY_VIEW)), None)
    grown = labelled.get(empty.label.removesuffix(" " + EMPTY_VIEW)) if empty else None
    if empty is not None and grown is not None:
        big = sum(r.records for r in runs[runs.index(empty) + 1:runs.index(grown)])
        met = table.verdict(grown.rate >= GOAL_GROWTH_RATIO * empty.rate,
                            f"a job with {big:,} objects in the view >= {GOAL_GROWTH_RATIO}x on an empty one")
        lines.append(f"{grown.records:,} records with {big:,} objects already in the view vs an empty view: "
                     f"{grown.rate:,.0f} vs {empty.rate:,.0f} records/s ({grown.rate / empty.rate:.2f}x, "
                     f"goal >= {GOAL_GROWTH_RATIO}x: {met})")
    csv_runs = [r for r in runs if r.label.startswith("CSV ")]
    if csv_runs and grown is not None:
        csv_run = csv_runs[0]
        lines.append(f"CSV vs JSON, {csv_run.records:,} records each (issue 4: the same rate): {csv_run.rate:,.0f} vs "
                     f"{grown.rate:,.0f} records/s ({csv_run.rate / grown.rate:.2f}x); API peak RSS "
                     f"{csv_run.peak_rss['api']:.0f} vs {grown.peak_rss['api']:.0f} MB")
    return lines
