// The dashboard's only way to the service: the /v1 routes with the x-api-key header, and the
// /v1 websockets with the key as the api_key query parameter (browsers cannot set a socket's
// headers). The key is asked for once and kept in this tab's session storage.

const KEY_NAME = "bulkjobs.apiKey";
const V1 = new URL("../v1/", window.location.href); // the page is served at /ui/, beside /v1

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error.message : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export const apiKey = {
  get: () => sessionStorage.getItem(KEY_NAME),
  set: (key) => sessionStorage.setItem(KEY_NAME, key),
  clear: () => sessionStorage.removeItem(KEY_NAME),
};

let unauthorized = () => {};

// What to do when the service refuses the key (ask for it again).
export function onUnauthorized(handler) {
  unauthorized = handler;
}

export function url(path, query) {
  const u = new URL(path, V1);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined && value !== "") u.searchParams.set(name, value);
  }
  return u;
}

async function answer(resp) {
  const isJson = (resp.headers.get("content-type") || "").startsWith("application/json");
  const body = resp.status === 204 ? null : isJson ? await resp.json() : await resp.text();
  if (resp.status === 401) unauthorized();
  if (!resp.ok) throw new ApiError(resp.status, isJson ? body : null);
  return body;
}

export async function request(method, path, { query, body, contentType } = {}) {
  const headers = { "x-api-key": apiKey.get() || "" };
  if (contentType) headers["content-type"] = contentType;
  return answer(await fetch(url(path, query), { method, headers, body }));
}

export const get = (path, query) => request("GET", path, { query });
export const post = (path, query) => request("POST", path, { query });
export const del = (path, query) => request("DELETE", path, { query });

// POST /v1/jobs with a file as the body, streamed from disk by the browser; ``onProgress``
// gets the fraction sent. (XMLHttpRequest: fetch cannot report upload progress.)
export function submitFile(file, contentType, query, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url("jobs", query));
    xhr.setRequestHeader("x-api-key", apiKey.get() || "");
    xhr.setRequestHeader("content-type", contentType);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onerror = () => reject(new Error("the upload failed: the service could not be reached"));
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status === 401) unauthorized();
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body));
    };
    xhr.send(file);
  });
}

// Fetch a download with the key header and hand it to the browser as a file.
export async function download(path, fallbackName) {
  const resp = await fetch(url(path), { headers: { "x-api-key": apiKey.get() || "" } });
  if (!resp.ok) return answer(resp);
  const disposition = resp.headers.get("content-disposition") || "";
  const match = /filename="?([^";]+)"?/.exec(disposition);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await resp.blob());
  link.download = match ? match[1] : fallbackName;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  return link.download;
}

const NORMAL_CLOSE = 1000;
const POLICY_CLOSE = 1008; // the key was refused
const NOT_FOUND_CLOSE = 4404;

// Follow a websocket: each JSON message goes to ``onMessage``; a socket that drops is opened
// again (after 1, 2, 4 ... up to 15 s), one that closes normally or refuses the key is not.
// ``onState`` hears "open", "retrying", "closed" or "not_found". Returns a function that stops it.
export function follow(path, onMessage, onState = () => {}) {
  let socket = null;
  let stopped = false;
  let delay = 1000;
  let timer = null;
  const open = () => {
    const u = url(path, { api_key: apiKey.get() });
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(u);
    socket.onopen = () => {
      delay = 1000;
      onState("open");
    };
    socket.onmessage = (event) => onMessage(JSON.parse(event.data));
    socket.onclose = (event) => {
      if (stopped) return;
      if (event.code === POLICY_CLOSE) {
        onState("closed");
        unauthorized();
      } else if (event.code === NORMAL_CLOSE || event.code === NOT_FOUND_CLOSE) {
        onState(event.code === NORMAL_CLOSE ? "closed" : "not_found");
      } else {
        onState("retrying");
        timer = setTimeout(open, delay);
        delay = Math.min(delay * 2, 15_000);
      }
    };
  };
  open();
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (socket) socket.close();
  };
}
