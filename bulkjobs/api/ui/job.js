// One job's page: live progress (/v1/jobs/{id}/live), counts, timings, settings, downloads, the
// commands its status allows, its runs or files, and its results a page at a time.

import { ApiError, del, download, follow, get, post } from "./api.js";
import {
  TERMINAL, badge, bytes, duration, errorText, h, jobDuration, kind, notice, number, pager, progressBar, replace,
  setProgress, time, title,
} from "./dom.js";
import { renderResults } from "./results.js";

// The commands each status allows (the API's table, domain.jobs.ALLOWED, less "update", which
// the dashboard does not offer; the dashboard's browser test checks that the two agree).
export const ALLOWED = {
  "queued": ["suspend", "cancel"],
  "processing": ["suspend", "cancel"],
  "suspended": ["resume", "cancel"],
  "scheduled": ["suspend", "cancel"],
  "succeeded": ["delete"],
  "partially_succeeded": ["delete"],
  "failed": ["delete"],
  "cancelled": ["delete"],
};

const COMMANDS = {
  suspend: { label: "Suspend", run: (id) => post(`jobs/${id}/suspend`) },
  resume: { label: "Resume", run: (id) => post(`jobs/${id}/resume`) },
  cancel: { label: "Cancel", confirm: "Cancel this job for good? Records not applied yet never will be.",
    run: (id) => post(`jobs/${id}/cancel`), cls: "danger" },
  delete: { label: "Delete", confirm: "Delete this job with its results and files?",
    run: (id) => del(`jobs/${id}`), cls: "danger" },
};

const COUNTS = ["total", "processed", "created", "updated", "deleted", "skipped", "failed"];

export function renderJob(main, id) {
  const path = `jobs/${encodeURIComponent(id)}`;
  const heading = h("h1");
  const status = h("span");
  const commands = h("div", { class: "commands" });
  const message = h("div");
  const progress = progressBar(0, "");
  const counts = h("div", { class: "counts" });
  const details = h("dl", { class: "details" });
  const settings = h("dl", { class: "details" });
  const mappings = h("section", { class: "card", hidden: true }, h("h2", null, "Field mappings"));
  const downloads = h("div", { class: "downloads" });
  const extra = h("div"); // a definition's runs, an export's files
  const results = h("section", { class: "card" });
  let job = null;
  let stopResults = () => {};
  let shownTerminal = false;
  let runsShown = null;

  function show(next) {
    const first = job === null;
    const statusChanged = first || next.status !== job.status;
    job = next;
    heading.textContent = title(job) || "Job";
    setProgress(progress, job.progress, job.status);
    replace(counts, COUNTS.map((name) => h("div", { class: `count count-${name}` },
      h("span", { class: "value" }, number((job.counts || {})[name])), h("span", { class: "label" }, name))));
    replace(details, detailItems(job));
    if (statusChanged) { // not on every count: a button replaced under the pointer would lose its click
      replace(status, badge(job.status));
      replace(commands, (ALLOWED[job.status] || []).map((name) => commandButton(name)));
    }
    if (first) {
      replace(settings, settingsOf(job));
      if (job.field_mappings && job.field_mappings.length) {
        mappings.append(mappingsTable(job.field_mappings));
        mappings.hidden = false;
      }
      replace(downloads, downloadButtons(job));
    }
    const terminal = TERMINAL.has(job.status);
    if (first || (terminal && !shownTerminal)) { // read again once all of them are readable
      replace(extra, extraOf(job));
      stopResults();
      stopResults = renderResults(results, path, job);
    } else if (job.schedule && job.runs !== runsShown) {
      replace(extra, extraOf(job));
    }
    shownTerminal = terminal;
    runsShown = job.runs;
  }

  function commandButton(name) {
    const command = COMMANDS[name];
    return h("button", { type: "button", class: command.cls || "secondary", "data-command": name, onclick: async (e) => {
      if (command.confirm && !window.confirm(command.confirm)) return;
      e.target.disabled = true;
      try {
        const answer = await command.run(job.id);
        if (name === "delete") {
          window.location.hash = "#/jobs";
          return;
        }
        if (answer && answer.id) show(answer);
        replace(message);
      } catch (error) {
        replace(message, notice(`${command.label} failed: ${errorText(error)}`));
        e.target.disabled = false;
      }
    } }, command.label);
  }

  replace(main,
    h("div", { class: "crumbs" }, h("a", { href: "#/jobs" }, "← Jobs")),
    h("div", { class: "page-head" }, h("div", { class: "title-block" }, heading, status,
      h("div", { class: "id" }, id)), commands),
    message,
    h("section", { class: "card progress-card" }, h("div", { class: "section-head" }, h("h2", null, "Progress"), downloads),
      progress, counts),
    h("div", { class: "job-grid" },
      h("section", { class: "card" }, h("h2", null, "Details"), details),
      h("section", { class: "card" }, h("h2", null, "Settings"), settings),
      mappings),
    extra,
    results);

  let stopLive = () => {};
  let alive = true;
  get(path).then((found) => {
    if (!alive) return; // another view came meanwhile
    show(found);
    if (!TERMINAL.has(found.status)) {
      stopLive = follow(`${path}/live`, show, (state) => state === "not_found" && replace(message, notice("This job is gone.")));
    }
  }, (error) => replace(main, notice(error instanceof ApiError && error.status === 404
    ? `There is no job ${id}.` : `The job could not be read: ${errorText(error)}`), h("a", { href: "#/jobs" }, "Back to the jobs")));
  const tick = setInterval(() => job && job.status === "processing" && replace(details, detailItems(job)), 1000);
  return () => {
    alive = false;
    stopLive();
    stopResults();
    clearInterval(tick);
  };
}

function item(label, ...value) {
  return [h("dt", null, label), h("dd", null, ...value)];
}

function detailItems(job) {
  const took = jobDuration(job);
  const processed = (job.counts || {}).processed || 0;
  // A rate over less than a second says more about timer resolution than about the job.
  const rate = took >= 1000 && processed ? `${number(Math.round(processed / (took / 1000)))} records/s` : null;
  return [
    item("Kind", kind(job)),
    item("Host", job.host || h("span", { class: "muted" }, job.started_at ? "–" : "not started")),
    item("Created", time(job.created_at)),
    item("Started", time(job.started_at)),
    item("Completed", time(job.completed_at)),
    item("Took", duration(took), rate ? h("span", { class: "muted" }, ` · ${rate}`) : null),
    job.parent_id ? item("Run of", h("a", { href: `#/jobs/${encodeURIComponent(job.parent_id)}` }, job.parent_id)) : null,
    job.scheduled_for ? item("Scheduled for", time(job.scheduled_for)) : null,
    job.error ? item("Error", h("span", { class: "error-text" }, `${job.error.message} (${job.error.code})`)) : null,
  ];
}

function settingsOf(job) {
  const rows = [
    ["Type", job.type], ["Action", job.action], ["Description", job.description], ["Job type", job.job_type],
    ["Operation", job.operation], ["Object type", job.object_type], ["Find by", job.find_by], ["Title", job.title],
    ["Source", job.source],
  ];
  if (job.file) {
    rows.push(["File", `${job.file.name || "(unnamed)"} · ${bytes(job.file.size)} · ${number(job.file.rows)} rows · `
      + `${job.file.character_encoding}`]);
  }
  if (job.dry_run) rows.push(["Dry run", "yes: its results say what it would do; nothing was changed"]);
  if (job.schedule) rows.push(["Schedule", scheduleText(job.schedule)], ["Runs made", number(job.runs || 0)]);
  if (job.time_frame) rows.push(["Time frame", job.time_frame.all ? "all" : `${job.time_frame.date_from} – ${job.time_frame.date_to}`]);
  if (job.params) rows.push(["Params", JSON.stringify(job.params)]);
  return rows.filter(([, v]) => v !== null && v !== undefined && v !== "").map(([label, value]) => item(label, value));
}

function mappingsTable(mappings) {
  return h("table", { class: "compact mappings" },
    h("thead", null, h("tr", null, h("th", { class: "num" }, "Column"), h("th", null, "Field"), h("th", null, "Type"),
      h("th", null, "Default"))),
    h("tbody", null, mappings.map((m) => h("tr", null, h("td", { class: "num" }, m.index), h("td", null, m.api_name),
      h("td", null, m.type || "string"), h("td", null, m.default_value === null ? "–" : String(m.default_value))))));
}

export function scheduleText(schedule) {
  const parts = [];
  if (schedule.cron) parts.push(`cron ${schedule.cron}`);
  if (schedule.start_date) parts.push(`from ${schedule.start_date}`);
  if (schedule.immediately) parts.push("first run at once");
  if (schedule.runs) parts.push(`at most ${number(schedule.runs)} runs`);
  return parts.join(" · ") || "–";
}

function downloadButtons(job) {
  const isCsv = Boolean(job.file || job.job_type);
  const link = (label, path, name) => h("button", { type: "button", class: "secondary", "data-download": label,
    onclick: async (e) => {
      e.target.disabled = true;
      try {
        await download(`jobs/${encodeURIComponent(job.id)}/${path}`, name);
      } catch (error) {
        window.alert(`${label}: ${errorText(error)}`);
      } finally {
        e.target.disabled = false;
      }
    } }, label);
  return [
    isCsv ? link("results.csv", "results.csv", `${job.id}-results.csv`) : null,
    isCsv ? link("Original file", "file", (job.file && job.file.name) || `${job.id}.csv`) : null,
    link("Log", "log", `${job.id}.log`),
  ];
}

function extraOf(job) {
  if (job.schedule) return runsCard(job);
  if (job.type === "export") return exportFilesCard(job);
  return null;
}

// A definition's runs, a page at a time.
export function runsTable(job, limit = 10) {
  const tbody = h("tbody");
  let offset = 0;
  const pages = pager((step) => {
    offset = Math.max(0, offset + step * limit);
    load();
  });
  async function load() {
    try {
      const page = await get(`jobs/${encodeURIComponent(job.id)}/runs`, { limit, offset });
      replace(tbody, page.items.map((run) => h("tr", null,
        h("td", null, h("a", { href: `#/jobs/${encodeURIComponent(run.id)}` }, run.id)),
        h("td", null, time(run.scheduled_for)), h("td", null, badge(run.status)),
        h("td", { class: "col-progress" }, progressBar(run.progress, run.status)),
        h("td", { class: "num" }, `${number(run.counts.processed)} / ${number(run.counts.total)}`),
        h("td", { class: "num" }, duration(jobDuration(run))))));
      if (!page.items.length) tbody.append(h("tr", null, h("td", { colspan: "6", class: "empty" }, "No runs yet.")));
      pages.update(offset, page.items.length, page.total, "runs");
    } catch (error) {
      replace(tbody, h("tr", null, h("td", { colspan: "6" }, notice(errorText(error)))));
    }
  }
  load();
  return h("div", null, h("div", { class: "table-wrap" }, h("table", { class: "compact" },
    h("thead", null, h("tr", null, h("th", null, "Run"), h("th", null, "Scheduled for"), h("th", null, "Status"),
      h("th", { class: "col-progress" }, "Progress"), h("th", { class: "num" }, "Records"), h("th", { class: "num" }, "Took"))),
    tbody)), pages.el);
}

function runsCard(job) {
  return h("section", { class: "card" }, h("h2", null, "Runs"), runsTable(job));
}

function exportFilesCard(job) {
  const tbody = h("tbody");
  get(`jobs/${encodeURIComponent(job.id)}/files`).then((files) => {
    replace(tbody, files.items.map((file) => h("tr", null, h("td", null, file.name), h("td", { class: "num" }, bytes(file.size)),
      h("td", { class: "num" }, number(file.records)), h("td", null, time(file.created_at)),
      h("td", null, h("button", { type: "button", class: "secondary small", onclick: () => download(`files/${encodeURIComponent(file.name)}`, file.name)
        .catch((error) => window.alert(errorText(error))) }, "Download")))));
    if (!files.items.length) tbody.append(h("tr", null, h("td", { colspan: "5", class: "empty" }, "No files yet.")));
  }, (error) => replace(tbody, h("tr", null, h("td", { colspan: "5" }, notice(errorText(error))))));
  return h("section", { class: "card" }, h("h2", null, "Files"), h("div", { class: "table-wrap" }, h("table", { class: "compact" },
    h("thead", null, h("tr", null, h("th", null, "Name"), h("th", { class: "num" }, "Size"), h("th", { class: "num" }, "Records"),
      h("th", null, "Created"), h("th", null, ""))), tbody)));
}
