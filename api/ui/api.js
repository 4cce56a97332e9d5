// The API key and calls to the node's API, shared by the pages.
//
// The key arrives in the URL fragment (#key=wsk_...), which the browser never sends to the
// server, or is typed into the key box. It is kept in this tab's sessionStorage and the
// fragment is removed from the address bar, so it is not left in history or screenshots.
"use strict";

const KEY_ITEM = "worldstate.key";

function takeKeyFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const key = params.get("key");
  if (key) {
    sessionStorage.setItem(KEY_ITEM, key.trim());
    params.delete("key");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_ITEM) || "";
}

function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key.trim());
  else sessionStorage.removeItem(KEY_ITEM);
}

function authHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  const key = apiKey();
  if (key) headers["Authorization"] = "Bearer " + key;
  return headers;
}

// An answer of the API: {ok, status, body}; body is the parsed JSON (a problem document on an
// error), or {detail: text} when the answer was not JSON. A network failure is status 0.
async function callApi(path, options) {
  const opts = Object.assign({}, options || {});
  const headers = authHeaders(opts.headers);
  if (opts.json !== undefined) {
    headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(opts.json);
    delete opts.json;
  }
  opts.headers = headers;
  let response;
  try {
    response = await fetch(path, opts);
  } catch (e) {
    return {ok: false, status: 0, body: {title: "Network error", detail: String(e)}};
  }
  const text = await response.text();
  let body;
  try {
    body = text ? JSON.parse(text) : {};
  } catch (e) {
    body = {detail: text};
  }
  return {ok: response.ok, status: response.status, body: body};
}

// "404 Unknown world: nothing is stored for ..." from a problem answer.
function describeProblem(answer) {
  const b = answer.body || {};
  const title = b.title || (answer.status === 0 ? "Network error" : "Error");
  const code = answer.status ? answer.status + " " : "";
  return code + title + (b.detail ? ": " + b.detail : "");
}

function worldPath(world) {
  return "/v1/worlds/" + encodeURIComponent(world);
}

// The key box: shown when the API answers 401/403, or asked for. `onKey` runs after a new key is set.
function installKeyBox(form, onKey) {
  const input = form.querySelector("input");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    setApiKey(input.value);
    input.value = "";
    onKey();
  });
  const forget = form.querySelector("[data-forget]");
  if (forget) forget.addEventListener("click", (ev) => {
    ev.preventDefault();
    setApiKey("");
    onKey();
  });
}

function showKeyBox(form, reason) {
  form.hidden = false;
  const why = form.querySelector("[data-why]");
  if (why) why.textContent = reason || "";
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name === "title") node.title = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}
