// The job list (filters, paging, live progress from /v1/live) and the form that submits a file.

import { follow, get, submitFile } from "./api.js";
import {
  STATUS_LABELS, badge, bytes, duration, errorText, h, jobDuration, kind, notice, number, pager, progressBar, replace,
  setProgress, time, title,
} from "./dom.js";

const RELOAD_AFTER = 1000; // ms: a job new to the list reloads it at most this often

// The list's filters and page, kept while the tab lives so "back to the jobs" finds them again.
const state = { status: "", q: "", limit: 25, offset: 0 };

export function renderJobs(main, setLive) {
  const rows = new Map(); // job id -> the row's parts that live updates change
  const tbody = h("tbody");
  const message = h("div");
  const pages = pager((step) => {
    state.offset = Math.max(0, state.offset + step * state.limit);
    load();
  });
  let loading = null;
  let reloadTimer = null;
  let newest = ""; // the creation time of the newest job listed (ISO 8601 UTC: compares as text)

  async function load() {
    const query = { status: state.status, q: state.q, limit: state.limit, offset: state.offset };
    const mine = (loading = get("jobs", query));
    let page;
    try {
      page = await mine;
    } catch (error) {
      replace(message, notice(`The jobs could not be read: ${errorText(error)}`));
      return;
    }
    if (mine !== loading) return; // a newer load was started meanwhile
    replace(message);
    rows.clear();
    newest = page.items.reduce((latest, job) => (job.created_at > latest ? job.created_at : latest), "");
    replace(tbody, page.items.map((job) => jobRow(job, rows)));
    if (!page.items.length) {
      tbody.append(h("tr", null, h("td", { colspan: "7", class: "empty" },
        state.status || state.q ? "No job matches these filters." : "No jobs yet: submit a file above.")));
    }
    pages.update(state.offset, page.items.length, page.total, "jobs");
  }

  // A change from the socket: update the job's row, or reload the first page (at most every
  // RELOAD_AFTER) when a job newer than its newest shows up.
  function changed(job) {
    const row = rows.get(job.id);
    if (row) {
      updateRow(row, job);
    } else if (state.offset === 0 && (!state.status || state.status === job.status) && job.created_at > newest
               && !reloadTimer) {
      reloadTimer = setTimeout(() => {
        reloadTimer = null;
        load();
      }, RELOAD_AFTER);
    }
  }

  const filters = filterBar(load);
  replace(main,
    h("div", { class: "page-head" }, h("h1", null, "Jobs")),
    submitForm(() => {
      state.offset = 0;
      load();
    }),
    h("section", { class: "card" },
      filters,
      message,
      h("div", { class: "table-wrap" }, h("table", { class: "jobs", id: "job-list" },
        h("thead", null, h("tr", null,
          h("th", null, "Job"), h("th", null, "Kind"), h("th", null, "Status"), h("th", { class: "col-progress" }, "Progress"),
          h("th", { class: "num" }, "Records"), h("th", null, "Created"), h("th", { class: "num" }, "Took"))),
        tbody)),
      pages.el));
  load();
  const stop = follow("live", changed, setLive);
  const tick = setInterval(() => rows.forEach((row) => row.job.status === "processing" && updateRow(row, row.job)), 1000);
  return () => {
    stop();
    clearInterval(tick);
    clearTimeout(reloadTimer);
  };
}

function filterBar(load) {
  const status = h("select", { name: "status", "aria-label": "Status", onchange: () => {
    state.status = status.value;
    state.offset = 0;
    load();
  } }, h("option", { value: "" }, "Any status"),
  Object.entries(STATUS_LABELS).map(([value, label]) => h("option", { value }, label)));
  status.value = state.status;
  let typing = null;
  const search = h("input", { type: "search", name: "q", placeholder: "Search descriptions", value: state.q,
    "aria-label": "Search descriptions", oninput: () => {
      clearTimeout(typing);
      typing = setTimeout(() => {
        state.q = search.value.trim();
        state.offset = 0;
        load();
      }, 250);
    } });
  const size = h("select", { name: "limit", "aria-label": "Jobs per page", onchange: () => {
    state.limit = Number(size.value);
    state.offset = 0;
    load();
  } }, [25, 50, 100, 250].map((n) => h("option", { value: String(n) }, `${n} per page`)));
  size.value = String(state.limit);
  return h("div", { class: "filters" }, status, search, size,
    h("button", { type: "button", class: "secondary", onclick: load }, "Refresh"));
}

function jobRow(job, rows) {
  const href = `#/jobs/${encodeURIComponent(job.id)}`;
  const row = {
    job,
    tr: h("tr", { "data-job-id": job.id, class: "clickable", onclick: (event) => {
      if (!event.target.closest("a")) window.location.hash = href;
    } }),
    status: h("td"),
    progress: progressBar(job.progress, job.status),
    records: h("td", { class: "num" }),
    took: h("td", { class: "num" }),
  };
  const name = title(job);
  row.tr.append(
    h("td", { class: "job-name" }, h("a", { href }, name || h("span", { class: "muted" }, "(no description)")),
      h("div", { class: "id" }, job.id)),
    h("td", null, kind(job), job.file ? h("div", { class: "muted small" }, `${job.file.name || "file"} · ${bytes(job.file.size)}`) : null),
    row.status,
    h("td", { class: "col-progress" }, row.progress),
    row.records,
    h("td", null, time(job.created_at)),
    row.took);
  updateRow(row, job);
  rows.set(job.id, row);
  return row.tr;
}

function updateRow(row, job) {
  row.job = job;
  row.tr.dataset.status = job.status;
  replace(row.status, badge(job.status));
  setProgress(row.progress, job.progress, job.status);
  const { processed, total, failed, skipped } = job.counts || {};
  const problems = [failed ? `${number(failed)} failed` : null, skipped ? `${number(skipped)} skipped` : null].filter(Boolean);
  replace(row.records, `${number(processed)} / ${number(total)}`,
    problems.length ? h("div", { class: "small warn" }, problems.join(" · ")) : null);
  row.took.textContent = duration(jobDuration(job));
}

// What each file format is sent as; CSV settings go in the query string, as do a bare JSON
// array's or NDJSON's type and action (an envelope carries its own).
const FORMATS = {
  csv: { label: "CSV", contentType: "text/csv" },
  json: { label: "JSON", contentType: "application/json" },
  ndjson: { label: "NDJSON", contentType: "application/x-ndjson" },
};
const ACTIONS = {
  resources: ["post", "update", "delete", "external_id_set", "external_id_update", "external_id_delete"],
  relationships: ["post", "delete"],
};
const OPERATIONS = ["insert", "update", "upsert", "delete"];

function formatOf(name) {
  const lower = name.toLowerCase();
  if (lower.endsWith(".csv")) return "csv";
  if (lower.endsWith(".ndjson") || lower.endsWith(".jsonl")) return "ndjson";
  return "json";
}

function field(label, control, hint) {
  return h("label", { class: "field" }, h("span", null, label), control, hint ? h("small", { class: "muted" }, hint) : null);
}

function submitForm(onSubmitted) {
  const file = h("input", { type: "file", name: "file", required: true, accept: ".csv,.json,.ndjson,.jsonl" });
  const format = h("select", { name: "format" }, Object.entries(FORMATS).map(([value, f]) => h("option", { value }, f.label)));
  const description = h("input", { type: "text", name: "description", maxlength: "4096", placeholder: "optional",
    class: "wide" });
  const operation = h("select", { name: "operation" }, OPERATIONS.map((op) => h("option", { value: op }, op)));
  operation.value = "upsert";
  const objectType = h("input", { type: "text", name: "object_type", placeholder: "e.g. machine" });
  const jobType = h("select", { name: "job_type" }, h("option", { value: "" }, "detect from the header"));
  const findBy = h("input", { type: "text", name: "find_by", placeholder: "external_id" });
  const type = h("select", { name: "type" }, Object.keys(ACTIONS).map((t) => h("option", { value: t }, t)));
  const action = h("select", { name: "action" });
  const envelopeNote = h("p", { class: "muted small", hidden: true },
    "This file is a JSON envelope: its type, action and description are read from it.");
  const setActions = () => replace(action, ACTIONS[type.value].map((a) => h("option", { value: a }, a)));
  type.addEventListener("change", setActions);
  setActions();
  action.value = "external_id_set";
  const csvFields = h("div", { class: "field-row" }, field("Operation", operation), field("Object type", objectType),
    field("Job type", jobType), field("Find by", findBy, "the field that identifies objects"));
  const jsonFields = h("div", { class: "field-row" }, field("Type", type), field("Action", action));
  const progress = progressBar(0, "processing");
  progress.hidden = true;
  const status = h("div", { class: "form-status" });
  const send = h("button", { type: "submit" }, "Submit job");

  let envelope = false;
  const showFields = () => {
    csvFields.hidden = format.value !== "csv";
    jsonFields.hidden = format.value === "csv" || (format.value === "json" && envelope);
    envelopeNote.hidden = !(format.value === "json" && envelope);
  };
  format.addEventListener("change", showFields);
  file.addEventListener("change", async () => {
    const chosen = file.files[0];
    if (!chosen) return;
    format.value = formatOf(chosen.name);
    const head = (await chosen.slice(0, 256).text()).trimStart();
    envelope = head.startsWith("{");
    showFields();
  });
  showFields();
  get("job-types").then((types) => jobType.append(...types.items.map((t) => h("option", { value: t.name }, t.name))),
    () => {});

  const form = h("form", { class: "card submit-form", id: "submit-form", onsubmit: async (event) => {
    event.preventDefault();
    const chosen = file.files[0];
    if (!chosen) return;
    // An envelope carries its own fields: the API refuses a query beside it.
    const query = format.value === "json" && envelope ? {} : { description: description.value.trim() };
    if (format.value === "csv") {
      Object.assign(query, { operation: operation.value, object_type: objectType.value.trim(), job_type: jobType.value,
        find_by: findBy.value.trim(), file_name: chosen.name });
    } else if (!(format.value === "json" && envelope)) {
      Object.assign(query, { type: type.value, action: action.value });
    }
    send.disabled = true;
    progress.hidden = false;
    setProgress(progress, 0, "processing");
    replace(status, h("span", { class: "muted" }, `Sending ${chosen.name} (${bytes(chosen.size)})…`));
    try {
      const job = await submitFile(chosen, FORMATS[format.value].contentType, query,
        (fraction) => {
          setProgress(progress, fraction * 100, "processing");
          if (fraction >= 1) replace(status, h("span", { class: "muted" }, "Sent: the service is checking and publishing it…"));
        });
      replace(status, notice(h("span", null, "Accepted: ",
        h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, title(job) || job.id),
        ` (${number(job.counts.total)} records)`), "ok"));
      onSubmitted(job);
    } catch (error) {
      replace(status, notice(`Not accepted: ${errorText(error)}`));
    } finally {
      send.disabled = false;
      progress.hidden = true;
    }
  } },
  h("h2", null, "Submit a file"),
  h("div", { class: "field-row" }, field("File (CSV, JSON or NDJSON)", file), field("Format", format),
    field("Description", description)),
  csvFields, jsonFields, envelopeNote,
  h("div", { class: "actions" }, send, progress, status));
  return form;
}
