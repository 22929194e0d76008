"""The bench's report: a table of every job's figures beside the goals of issue 3, and notes below it."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.measure import JobRun, pct

# Goals from issue 3 ("Benchmark"), defined for 1,000,000 records; checked on the first two jobs
# (JSON and NDJSON of that size), the poll latency on every job.
GOAL_RECORDS = 1_000_000
GOAL_RATIO = 0.6
GOAL_202_S = 10.0
GOAL_API_RSS_MB = 200.0
GOAL_POLL_P99_MS = 50.0
MEASURED = ("bench", "api", "worker", "worker2", "store", "broker")  # bench: this client


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
        lines = [sep, "".ljust(name_w) + "".join(h.rjust(width) for h in heads) + "   goal (issue 3)".ljust(20) + "met",
                 sep]
        for name, values, goal, met in self.rows:
            lines.append(name.ljust(name_w) + "".join(v.rjust(width) for v in values) + "   " + goal.ljust(17) + met)
        lines.append(sep)
        return lines


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(n: int, runs: list[JobRun], base: list[dict[str, float]], elapsed: float) -> list[str]:
    """Print the table and the notes; the goals missed."""
    base_rate = statistics.mean(b["rate"] for b in base)
    table = Table(at_scale=n >= GOAL_RECORDS)
    _timing_rows(table, runs, base_rate)
    _poll_rows(table, runs)
    _rss_rows(table, runs)
    _cpu_rows(table, runs)
    lines = table.lines([r.label for r in runs])
    sep = lines[0]
    lines += _baseline_notes(base, base_rate) + _comparisons(runs)
    lines.append("CPU-s: CPU seconds of each process from POST start to the 202 / from the 202 to terminal, and "
                 "the latter as % of one core (bench = this client). Wall: " + ", ".join(
                     f"{r.label} {r.s_to_202:.1f} / {r.s_to_terminal - r.s_to_202:.1f} s" for r in runs))
    if not table.at_scale:
        lines.append(f"* goals are defined for 1,000,000 records; this run had {n:,}")
    lines.append(f"bench wall time {elapsed:.0f} s; figures are from a shared, noisy machine")
    lines.append(sep)
    print("\n".join(lines), flush=True)
    return table.misses


def _all(runs: list[JobRun], ok: Callable[[JobRun], bool]) -> bool:
    return all(ok(r) for r in runs)


def _timing_rows(table: Table, runs: list[JobRun], base_rate: float) -> None:
    goal_jobs = runs[:2]
    table.row("records", [f"{r.records:,}" for r in runs])
    table.row("body MB", [f"{r.body_mb:.1f}" for r in runs])
    table.row("s to 202", [f"{r.s_to_202:.2f}" for r in runs], f"<= {GOAL_202_S:.0f} s",
              table.verdict(_all(goal_jobs, lambda r: r.s_to_202 <= GOAL_202_S), "202 within 10 s"))
    table.row("s to counts.processed=N", [fmt(r.s_all_processed, ".2f") for r in runs])
    table.row("s to terminal", [f"{r.s_to_terminal:.2f}" for r in runs])
    table.row("records/s end to end", [f"{r.rate:,.0f}" for r in runs])
    table.row("x baseline", [f"{r.rate / base_rate:.2f}" for r in runs], f">= {GOAL_RATIO}",
              table.verdict(_all(goal_jobs, lambda r: r.rate / base_rate >= GOAL_RATIO),
                            "end to end >= 0.6x baseline"))


def _poll_rows(table: Table, runs: list[JobRun]) -> None:
    table.row("poll p50 ms (after 202)", [f"{pct(r.polls, 50):.1f}" for r in runs])
    table.row("poll p99 ms (after 202)", [f"{pct(r.polls, 99):.1f}" for r in runs], f"< {GOAL_POLL_P99_MS:.0f} ms",
              table.verdict(_all(runs, lambda r: pct(r.polls, 99) < GOAL_POLL_P99_MS), "poll p99 < 50 ms"))
    table.row("poll max ms / polls", [f"{max(r.polls):.0f} / {len(r.polls)}" for r in runs])
    table.row("poll p50/p99 ms in POST",
              [f"{pct(r.upload_polls, 50):.0f} / {pct(r.upload_polls, 99):.0f}" for r in runs], "(info)")


def _rss_rows(table: Table, runs: list[JobRun]) -> None:
    for name in MEASURED[1:]:
        if not any(name in r.peak_rss for r in runs):
            continue
        goal, met = "", ""
        if name == "api":
            goal = f"< {GOAL_API_RSS_MB:.0f} MB"
            met = table.verdict(_all(runs[:2], lambda r: r.peak_rss["api"] < GOAL_API_RSS_MB),
                                "API peak RSS < 200 MB")
        table.row(f"peak RSS MB {name}", [fmt(r.peak_rss.get(name), ".0f") for r in runs], goal, met)


def _cpu_cell(r: JobRun, name: str) -> str:
    if name not in r.cpu_upload:
        return "-"
    share = 100 * r.cpu_process[name] / (r.s_to_terminal - r.s_to_202)
    return f"{r.cpu_upload[name]:.1f} / {r.cpu_process[name]:.1f} {share:3.0f}%"


def _cpu_rows(table: Table, runs: list[JobRun]) -> None:
    for name in MEASURED:
        if any(name in r.cpu_upload for r in runs):
            table.row(f"CPU-s {name} (POST / after, %)", [_cpu_cell(r, name) for r in runs])


def _baseline_notes(base: list[dict[str, float]], base_rate: float) -> list[str]:
    b_text = ", ".join(f"{b['rate']:,.0f} ({b['seconds']:.2f} s, parse {b['parse_s']:.2f} s)" for b in base)
    return [f"baseline (stdlib json.load; objects keyed by (type, external_id) upserted + result rows, executemany "
            f"in 5,000-row transactions), records/s: {b_text}",
            f"  mean {base_rate:,.0f} records/s is the reference for 'x baseline' (issue: 55-67k/s here)"]


def _comparisons(runs: list[JobRun]) -> list[str]:
    """One worker against two (NDJSON), and CSV against JSON of the same records."""
    lines = []
    labelled = {r.label: r for r in runs}
    if "NDJSON 2 workers" in labelled:
        one, two = labelled["NDJSON"], labelled["NDJSON 2 workers"]
        lines.append(f"1 vs 2 workers (NDJSON): {one.rate:,.0f} vs {two.rate:,.0f} records/s "
                     f"({two.rate / one.rate:.2f}x)")
    csv_runs = [r for r in runs if r.label.startswith("CSV ")]
    if csv_runs:
        csv_run, json_run = csv_runs[0], next(r for r in runs if r.label.startswith("JSON "))
        lines.append(f"CSV vs JSON, {csv_run.records:,} records each (issue 4: the same rate): {csv_run.rate:,.0f} vs "
                     f"{json_run.rate:,.0f} records/s ({csv_run.rate / json_run.rate:.2f}x); API peak RSS "
                     f"{csv_run.peak_rss['api']:.0f} vs {json_run.peak_rss['api']:.0f} MB")
    return lines

