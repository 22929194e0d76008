// Worker health (GET /v1/health): each worker's host, partitions and last heartbeat, read again
// every few seconds while shown.

import { ApiError, get } from "./api.js";
import { ago, errorText, h, notice, replace, time } from "./dom.js";

const EVERY = 5000; // ms between two reads

export function renderHealth(main) {
  const summary = h("div");
  const tbody = h("tbody");
  const version = h("span", { class: "muted small" });

  async function load() {
    try {
      const health = await get("health");
      replace(summary, h("p", { class: "health ok" }, h("span", { class: "badge status-succeeded" }, "ok"),
        ` ${health.workers.length} worker${health.workers.length === 1 ? "" : "s"} reported in the last 15 s.`));
      replace(tbody, health.workers.map((w) => h("tr", null,
        h("td", { class: "id" }, w.worker), h("td", null, w.host), h("td", { class: "num" }, w.pid),
        h("td", null, (w.partitions || []).length ? w.partitions.join(", ") : h("span", { class: "muted" }, "none")),
        h("td", null, time(w.seen_at), h("span", { class: "muted" }, ` · ${ago(w.seen_at)}`)))));
    } catch (error) {
      const down = error instanceof ApiError && error.status === 503;
      replace(summary, h("p", { class: "health down" }, h("span", { class: "badge status-failed" }, "unavailable"),
        ` ${down ? errorText(error) : `The health check did not answer: ${errorText(error)}`}`));
      replace(tbody, h("tr", null, h("td", { colspan: "5", class: "empty" }, "No worker has reported recently.")));
    }
  }

  get("version").then((v) => {
    version.textContent = `bulkjobs ${v.version} · build ${v.build} · ${String(v.commit).slice(0, 12)}`;
  }, (error) => replace(version, notice(errorText(error))));
  replace(main,
    h("div", { class: "page-head" }, h("h1", null, "Health"), version),
    h("section", { class: "card" }, summary,
      h("div", { class: "table-wrap" }, h("table", { class: "jobs", id: "workers" },
        h("thead", null, h("tr", null, h("th", null, "Worker"), h("th", null, "Host"), h("th", { class: "num" }, "PID"),
          h("th", null, "Partitions"), h("th", null, "Last heartbeat"))),
        tbody))));
  load();
  const timer = setInterval(load, EVERY);
  return () => clearInterval(timer);
}
