// The dashboard's entry: asks for the API key, then shows the view the URL's fragment names
// (#/jobs, #/jobs/<id>, #/schedules, #/files, #/health). Each view renders into <main> and
// returns a function that stops what it started (sockets, timers) when another view comes.

import { apiKey, get, onUnauthorized } from "./api.js";
import { h, notice, replace } from "./dom.js";
import { renderFiles } from "./files.js";
import { renderHealth } from "./health.js";
import { renderJob } from "./job.js";
import { renderJobs } from "./jobs.js";
import { renderSchedules } from "./schedules.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signOut = document.getElementById("sign-out");
const live = document.getElementById("live");
let stopView = () => {};

const ROUTES = [
  [/^#\/jobs\/([^/?]+)$/, "jobs", (m) => renderJob(main, decodeURIComponent(m[1]))],
  [/^#\/schedules$/, "schedules", () => renderSchedules(main)],
  [/^#\/files$/, "files", () => renderFiles(main)],
  [/^#\/health$/, "health", () => renderHealth(main)],
  [/^(#\/jobs)?$|^#\/?$/, "jobs", () => renderJobs(main, setLive)],
];

// The "live" mark in the top bar: whether the job list's socket is connected.
function setLive(state) {
  live.hidden = state === null;
  live.dataset.state = state || "";
  live.textContent = state === "open" ? "live" : "reconnecting…";
}

function route() {
  stopView();
  stopView = () => {};
  setLive(null);
  if (!apiKey.get()) {
    askForKey();
    return;
  }
  nav.hidden = false;
  signOut.hidden = false;
  const hash = window.location.hash;
  for (const [pattern, view, render] of ROUTES) {
    const match = pattern.exec(hash);
    if (match) {
      for (const link of nav.querySelectorAll("a")) link.classList.toggle("active", link.dataset.view === view);
      stopView = render(match) || (() => {});
      return;
    }
  }
  replace(main, notice(`Nothing here: ${hash}`), h("a", { href: "#/jobs" }, "Back to the jobs"));
}

function askForKey(message) {
  nav.hidden = true;
  signOut.hidden = true;
  const input = h("input", { type: "password", name: "api-key", autocomplete: "off", required: true,
    placeholder: "API key", "aria-label": "API key" });
  const status = h("div", { class: "form-status" }, message ? notice(message) : null);
  const form = h("form", { class: "card key-form", onsubmit: async (event) => {
    event.preventDefault();
    apiKey.set(input.value.trim());
    try {
      await get("jobs", { limit: 1 });
    } catch (error) {
      if (error.status !== 401) { // a 401 has asked for the key again already (onUnauthorized)
        apiKey.clear();
        replace(status, notice(`The service did not answer: ${error.message}`));
      }
      return;
    }
    route();
  } },
  h("h1", null, "Sign in with an API key"),
  h("p", { class: "muted" }, "The key is kept in this browser tab only (session storage) and sent as the x-api-key header."),
  input,
  h("button", { type: "submit" }, "Continue"),
  status);
  replace(main, form);
  input.focus();
}

onUnauthorized(() => {
  if (!apiKey.get()) return;
  apiKey.clear();
  stopView();
  stopView = () => {};
  setLive(null);
  askForKey("The service refused this API key: enter a valid one.");
});

signOut.addEventListener("click", () => {
  apiKey.clear();
  route();
});
window.addEventListener("hashchange", route);
route();
