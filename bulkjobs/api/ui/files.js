// The tenant's export files (GET /v1/files): filters, paging, download and delete.

import { del, download, get } from "./api.js";
import { bytes, errorText, h, notice, number, pager, replace, time } from "./dom.js";

const state = { name: "", type: "", limit: 25, offset: 0 };

export function renderFiles(main) {
  const tbody = h("tbody");
  const message = h("div");
  const pages = pager((step) => {
    state.offset = Math.max(0, state.offset + step * state.limit);
    load();
  });

  async function load() {
    let page;
    try {
      page = await get("files", { name: state.name, type: state.type, limit: state.limit, offset: state.offset });
    } catch (error) {
      replace(message, notice(`The files could not be read: ${errorText(error)}`));
      return;
    }
    replace(message);
    replace(tbody, page.items.map((file) => fileRow(file, load, message)));
    if (!page.items.length) {
      tbody.append(h("tr", null, h("td", { colspan: "7", class: "empty" }, "No export files.")));
    }
    pages.update(state.offset, page.items.length, page.total, "files");
  }

  let typing = null;
  const name = h("input", { type: "search", name: "name", placeholder: "File name contains", value: state.name,
    "aria-label": "File name", oninput: () => {
      clearTimeout(typing);
      typing = setTimeout(() => {
        state.name = name.value.trim();
        state.offset = 0;
        load();
      }, 250);
    } });
  const type = h("select", { name: "type", "aria-label": "File type", onchange: () => {
    state.type = type.value;
    state.offset = 0;
    load();
  } }, h("option", { value: "" }, "Any type"), h("option", { value: "csv" }, "CSV"), h("option", { value: "jsonl" }, "JSON lines"));
  type.value = state.type;
  replace(main,
    h("div", { class: "page-head" }, h("h1", null, "Export files")),
    h("section", { class: "card" },
      h("div", { class: "filters" }, name, type, h("button", { type: "button", class: "secondary", onclick: load }, "Refresh")),
      message,
      h("div", { class: "table-wrap" }, h("table", { class: "jobs" },
        h("thead", null, h("tr", null, h("th", null, "Name"), h("th", null, "Export"), h("th", null, "Type"),
          h("th", { class: "num" }, "Size"), h("th", { class: "num" }, "Records"), h("th", null, "Created"), h("th", null, ""))),
        tbody)),
      pages.el));
  load();
  return () => clearTimeout(typing);
}

function fileRow(file, reload, message) {
  const act = (label, work) => h("button", { type: "button", class: label === "Delete" ? "danger small" : "secondary small",
    onclick: async (e) => {
      e.target.disabled = true;
      try {
        await work();
      } catch (error) {
        replace(message, notice(`${label} ${file.name}: ${errorText(error)}`));
      } finally {
        e.target.disabled = false;
      }
    } }, label);
  const path = `files/${encodeURIComponent(file.name)}`;
  return h("tr", { "data-file": file.name },
    h("td", { class: "id" }, file.name),
    h("td", null, h("a", { href: `#/jobs/${encodeURIComponent(file.job_id)}` }, file.job_title || file.job_id)),
    h("td", null, file.type),
    h("td", { class: "num" }, bytes(file.size)),
    h("td", { class: "num" }, number(file.records)),
    h("td", null, time(file.created_at)),
    h("td", null, h("div", { class: "row-actions" }, act("Download", () => download(path, file.name)), act("Delete", async () => {
      if (!window.confirm(`Delete ${file.name}? It cannot be downloaded again.`)) return;
      await del(path);
      await reload();
    }))));
}
