// Building the page: elements made from data as text (never as HTML), and how numbers, sizes,
// times and statuses read.

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const STATUS_LABELS = {
  queued: "Queued", processing: "Processing", succeeded: "Succeeded", partially_succeeded: "Partially succeeded",
  failed: "Failed", cancelled: "Cancelled", suspended: "Suspended", scheduled: "Scheduled",
};
export const TERMINAL = new Set(["succeeded", "partially_succeeded", "failed", "cancelled"]);

export function badge(status) {
  return h("span", { class: `badge status-${status}`, "data-status": status }, STATUS_LABELS[status] || status);
}

// A bar that fills to ``percent``; set with ``setProgress`` as it changes. Width goes through
// the style object: the page's policy refuses inline style attributes.
export function progressBar(percent, status) {
  const fill = h("span", { class: "fill" });
  const bar = h("span", { class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" }, fill);
  const label = h("span", { class: "progress-label" });
  const wrap = h("span", { class: "progress-wrap" }, bar, label);
  setProgress(wrap, percent, status);
  return wrap;
}

export function setProgress(wrap, percent, status) {
  const value = Math.max(0, Math.min(100, Math.round(percent || 0)));
  const bar = wrap.querySelector(".progress");
  bar.setAttribute("aria-valuenow", String(value));
  bar.dataset.status = status || "";
  wrap.querySelector(".fill").style.width = `${value}%`;
  wrap.querySelector(".progress-label").textContent = `${value}%`;
}

export const number = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = Number(n);
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

const pad = (n) => String(n).padStart(2, "0");

// A time in the browser's zone, to the second; the exact ISO time is its tooltip.
export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "–");
  const t = new Date(iso);
  const text = `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} `
    + `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
  return h("time", { datetime: iso, title: iso }, text);
}

export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  const s = ms / 1000;
  if (s < 1) return `${Math.round(ms)} ms`;
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

// How long a job ran (or has been running): from its start to its end, or to now.
export function jobDuration(job) {
  if (!job.started_at) return null;
  const end = job.completed_at ? Date.parse(job.completed_at) : Date.now();
  return end - Date.parse(job.started_at);
}

export function ago(iso) {
  if (!iso) return "–";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  return seconds < 90 ? `${Math.round(seconds)} s ago` : `${duration(seconds * 1000)} ago`;
}

// What a job is, in a few words: "CSV upsert · machine", "resources · external_id_set", "export · machine".
export function kind(job) {
  if (job.type === "export") return `export · ${job.object_type || job.source || ""}`;
  if (job.job_type) {
    const what = job.job_type === "objects" ? job.object_type : job.job_type;
    return `CSV ${job.operation || ""} · ${what || ""}`;
  }
  return `${job.type} · ${job.action}`;
}

export function title(job) {
  return job.title || job.description || null;
}

export function errorText(error) {
  if (!error) return "";
  if (error.body && error.body.error) {
    const { code, message } = error.body.error;
    return `${message}${code ? ` (${code})` : ""}`;
  }
  return error.message || String(error);
}

// A "previous / next" pager over offset and limit, told the total by ``update``.
export function pager(onPage) {
  const info = h("span", { class: "pager-info" });
  const prev = h("button", { type: "button", class: "secondary", onclick: () => onPage(-1) }, "‹ Previous");
  const next = h("button", { type: "button", class: "secondary", onclick: () => onPage(1) }, "Next ›");
  const el = h("div", { class: "pager" }, info, prev, next);
  return {
    el,
    update(offset, count, total, noun = "items") {
      if (total === 0) info.textContent = `No ${noun}`;
      else if (offset === 0 && count === total) info.textContent = `${number(total)} ${total === 1 ? noun.replace(/s$/, "") : noun}`;
      else info.textContent = `${number(offset + 1)}–${number(offset + count)} of ${number(total)} ${noun}`;
      prev.disabled = offset <= 0;
      next.disabled = offset + count >= total;
    },
  };
}

export function notice(text, cls = "error") {
  return h("div", { class: `notice ${cls}`, role: cls === "error" ? "alert" : "status" }, text);
}
