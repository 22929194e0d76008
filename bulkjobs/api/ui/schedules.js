// Scheduled definitions (GET /v1/jobs?status=scheduled), each with its runs on demand.

import { get } from "./api.js";
import { badge, errorText, h, kind, notice, number, pager, replace, time, title } from "./dom.js";
import { runsTable, scheduleText } from "./job.js";

const LIMIT = 25;

export function renderSchedules(main) {
  const tbody = h("tbody");
  const message = h("div");
  let offset = 0;
  const pages = pager((step) => {
    offset = Math.max(0, offset + step * LIMIT);
    load();
  });

  async function load() {
    let page;
    try {
      page = await get("jobs", { status: "scheduled", limit: LIMIT, offset });
    } catch (error) {
      replace(message, notice(`The schedules could not be read: ${errorText(error)}`));
      return;
    }
    replace(message);
    replace(tbody, page.items.map(definitionRows));
    if (!page.items.length) {
      tbody.append(h("tr", null, h("td", { colspan: "7", class: "empty" },
        "No scheduled jobs. A job submitted with a \"schedule\" (cron, runs, start date) appears here.")));
    }
    pages.update(offset, page.items.length, page.total, "schedules");
  }

  replace(main,
    h("div", { class: "page-head" }, h("h1", null, "Schedules"),
      h("button", { type: "button", class: "secondary", onclick: load }, "Refresh")),
    h("section", { class: "card" }, message,
      h("div", { class: "table-wrap" }, h("table", { class: "jobs" },
        h("thead", null, h("tr", null, h("th", null, "Definition"), h("th", null, "Kind"), h("th", null, "Status"),
          h("th", null, "Schedule"), h("th", { class: "num" }, "Runs"), h("th", null, "Created"), h("th", null, ""))),
        tbody)),
      pages.el));
  load();
  return () => {};
}

// A definition's row, and below it a row that shows its runs when asked.
function definitionRows(job) {
  const href = `#/jobs/${encodeURIComponent(job.id)}`;
  const runs = h("tr", { class: "sub", hidden: true }, h("td", { colspan: "7" }));
  const toggle = h("button", { type: "button", class: "secondary small", onclick: () => {
    runs.hidden = !runs.hidden;
    toggle.textContent = runs.hidden ? "Show runs" : "Hide runs";
    if (!runs.hidden) replace(runs.firstChild, runsTable(job, 5));
  } }, "Show runs");
  const row = h("tr", { "data-job-id": job.id },
    h("td", { class: "job-name" }, h("a", { href }, title(job) || job.id), h("div", { class: "id" }, job.id)),
    h("td", null, kind(job)),
    h("td", null, badge(job.status)),
    h("td", null, scheduleText(job.schedule || {})),
    h("td", { class: "num" }, number(job.runs || 0)),
    h("td", null, time(job.created_at)),
    h("td", null, toggle));
  return [row, runs];
}
