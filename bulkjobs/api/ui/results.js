// A job's per-record results, a page at a time, with an outcome filter.
//
// GET /v1/jobs/{id}/results pages by record index and has no outcome filter, so a filtered page
// is made here: windows of records are read from where the page starts until the page is full,
// the results end, or MAX_WINDOWS windows were read (a job of a million records with few
// failures is then scanned a bounded stretch per click; "Next" goes on from there). Nothing
// ever reads all of a job's results.

import { get } from "./api.js";
import { errorText, h, notice, number, replace } from "./dom.js";

const WINDOW = 1000; // records per request when filtering (the API's largest page)
const MAX_WINDOWS = 10;
const FILTERS = {
  "": { label: "All outcomes", keep: () => true },
  problems: { label: "Failed or skipped", keep: (r) => !r.success },
  failed: { label: "Failed", keep: (r) => r.status === "failed" },
  skipped: { label: "Skipped", keep: (r) => r.status === "skipped" },
  created: { label: "Created", keep: (r) => r.status === "created" },
  updated: { label: "Updated", keep: (r) => r.status === "updated" },
  deleted: { label: "Deleted", keep: (r) => r.status === "deleted" },
};

export function renderResults(section, path, job) {
  const outcome = h("select", { name: "outcome", "aria-label": "Outcome" },
    Object.entries(FILTERS).map(([value, f]) => h("option", { value }, f.label)));
  const size = h("select", { name: "results-limit", "aria-label": "Results per page" },
    [50, 100, 500].map((n) => h("option", { value: String(n) }, `${n} per page`)));
  size.value = "50";
  const tbody = h("tbody");
  const info = h("span", { class: "pager-info" });
  const prev = h("button", { type: "button", class: "secondary", onclick: () => go(starts.pop() ?? 0, false) }, "‹ Previous");
  const next = h("button", { type: "button", class: "secondary", onclick: () => go(nextStart, true) }, "Next ›");
  let starts = []; // where the pages before this one started, for "Previous"
  let start = 0;
  let nextStart = 0;
  let current = 0; // a newer read makes an older one's answer moot
  let alive = true;

  // The page from record ``from`` on: up to ``limit`` results that ``keep`` keeps, where the
  // next page starts (``to``), and whether the results read so far end there.
  async function readPage(from, limit, keep) {
    const filtered = outcome.value !== "";
    const want = filtered ? WINDOW : limit;
    const found = [];
    let at = from;
    for (let reads = 0; reads < (filtered ? MAX_WINDOWS : 1); reads += 1) {
      const page = await get(`${path}/results`, { offset: at, limit: want });
      for (const result of page.items) {
        at = result.index + 1;
        if (keep(result)) found.push(result);
        if (found.length === limit) return { found, to: at, ended: false };
      }
      if (page.items.length < want) return { found, to: at, ended: true };
    }
    return { found, to: at, ended: false };
  }

  async function go(from, forward) {
    const mine = (current += 1);
    const filter = FILTERS[outcome.value];
    const limit = Number(size.value);
    info.textContent = "Reading…";
    let page;
    // The job's counts: how many are processed, and how many records it has (results land in
    // parallel, so any index below that may be there while it runs).
    let counts;
    try {
      [page, counts] = await Promise.all([readPage(from, limit, filter.keep), get(path).then((j) => j.counts)]);
    } catch (error) {
      if (alive && mine === current) replace(tbody, row(notice(`The results could not be read: ${errorText(error)}`)));
      return;
    }
    if (!alive || mine !== current) return;
    if (forward && from !== start) starts.push(start);
    start = from;
    nextStart = page.to;
    replace(tbody, page.found.map(resultRow));
    if (!page.found.length) tbody.append(row(h("span", { class: "muted" }, outcome.value
      ? `No ${filter.label.toLowerCase()} results in records ${number(from)}–${number(Math.max(from, page.to - 1))}.`
      : "No results yet.")));
    const stretch = page.to > from ? `records ${number(from)}–${number(page.to - 1)}` : `from record ${number(from)}`;
    const processed = `${number(counts.processed)} of ${number(counts.total)} processed`;
    if (!counts.processed) info.textContent = "No record processed yet";
    else if (outcome.value) info.textContent = `${number(page.found.length)} ${filter.label.toLowerCase()} in ${stretch} · ${processed}`;
    else info.textContent = `${stretch} · ${processed}`;
    prev.disabled = start === 0 && !starts.length;
    next.disabled = page.ended || (counts.total !== null && page.to >= counts.total);
  }

  const reset = () => {
    starts = [];
    go(0, false);
  };
  outcome.addEventListener("change", reset);
  size.addEventListener("change", reset);
  replace(section,
    h("div", { class: "section-head" }, h("h2", null, "Results"),
      h("div", { class: "filters" }, outcome, size, h("button", { type: "button", class: "secondary", onclick: () => go(start, false) }, "Refresh"))),
    h("div", { class: "table-wrap" }, h("table", { class: "compact results", id: "results" },
      h("thead", null, h("tr", null, h("th", { class: "num" }, "Record"), h("th", null, "Outcome"), h("th", null, "Object id"),
        h("th", null, "Error"))),
      tbody)),
    h("div", { class: "pager" }, info, prev, next));
  const none = job.type === "export" ? "An export has no per-record results: see its files."
    : job.schedule ? "A scheduled definition has no results of its own: each of its runs has." : null;
  if (none) {
    replace(section, h("h2", null, "Results"), h("p", { class: "muted" }, none));
    return () => {};
  }
  reset();
  return () => {
    alive = false;
  };
}

function row(content) {
  return h("tr", null, h("td", { colspan: "4", class: "empty" }, content));
}

function resultRow(result) {
  const errors = result.errors || [];
  return h("tr", { "data-outcome": result.status },
    h("td", { class: "num" }, number(result.index)),
    h("td", null, h("span", { class: `badge outcome-${result.status}` }, result.status)),
    h("td", { class: "id" }, result.id || h("span", { class: "muted" }, "–")),
    h("td", { class: "error-text" }, errors.map((e) => h("div", null, `${e.code}: ${e.detail || e.title}`))));
}
