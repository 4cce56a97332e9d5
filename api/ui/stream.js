// The entity subscription (GET /v1/worlds/{w}/entities/stream), read with fetch().
//
// EventSource cannot send an Authorization header, so the server-sent events are read from a
// fetch() body and parsed here (https://html.spec.whatwg.org/#event-stream-interpretation).
// A dropped connection is resumed with Last-Event-ID, so no change is missed or repeated; a
// stream the server ends as trimmed or too slow starts again from now, and the page re-reads
// the entities (onSubscribed with fresh = true).
"use strict";

const SUBSCRIBED_AFTER = /^subscribed after (\S+)$/;
// The node sends a heartbeat every WORLDSTATE_SSE_HEARTBEAT_S (15 s by default): a connection
// silent for three of them is taken as dead and opened again.
const SILENT_MS = 45000;
const RETRY_MS = [500, 1000, 2000, 5000, 10000];
// Problems no retry can fix: the page shows them and the stream stops (a new key reloads the page).
const FATAL = new Set([400, 401, 403]);
// A world not created yet (404) is shown as such, and asked for again this often.
const ABSENT_RETRY_MS = 5000;
const RESYNC_TYPES = new Set(["/problems/changes-trimmed", "/problems/slow-consumer"]);

class SseParser {
  constructor() {
    this.reset();
    this.lastId = null;
  }

  reset() {
    this.event = "";
    this.data = [];
  }

  // One line in; an event {id, event, data} when the line ends one, or {comment} for a comment.
  feed(line) {
    if (line === "") {
      if (!this.data.length && !this.event) return null;
      const ev = {id: this.lastId, event: this.event || "message", data: this.data.join("\n")};
      this.reset();
      return ev;
    }
    if (line.startsWith(":")) return {comment: line.slice(1).trim()};
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "data") this.data.push(value);
    else if (name === "event") this.event = value;
    else if (name === "id" && !value.includes("\0")) this.lastId = value;
    return null;
  }
}

class EntityStream {
  // handlers: onSubscribed(fresh), onChange(change), onState(state, detail), onFatal(answer)
  constructor(world, handlers) {
    this.path = worldPath(world) + "/entities/stream";
    this.handlers = handlers;
    this.lastId = null;  // the position to resume after; null: from now
    this.failures = 0;
    this.stopped = false;
    this.controller = null;
  }

  start() {
    this.stopped = false;
    this.run();
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async run() {
    while (!this.stopped) {
      const outcome = await this.connectOnce();
      if (this.stopped || outcome === "fatal") return;
      if (outcome === "absent") continue;
      if (outcome === "resync") {
        this.lastId = null;
        continue;
      }
      const wait = RETRY_MS[Math.min(this.failures, RETRY_MS.length - 1)];
      this.failures += 1;
      this.handlers.onState("reconnecting", "next try in " + (wait / 1000) + " s");
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  // One connection, until it ends: "retry", "resync", "absent" (404: asked again later) or "fatal".
  async connectOnce() {
    const controller = new AbortController();
    this.controller = controller;
    const headers = authHeaders({"Accept": "text/event-stream"});
    if (this.lastId !== null) headers["Last-Event-ID"] = this.lastId;
    const fresh = this.lastId === null;
    let response;
    try {
      response = await fetch(this.path, {headers: headers, signal: controller.signal, cache: "no-store"});
    } catch (e) {
      return "retry";
    }
    if (!response.ok) {
      const text = await response.text();
      let body;
      try { body = JSON.parse(text); } catch (e) { body = {detail: text}; }
      const answer = {ok: false, status: response.status, body: body};
      if (response.status === 422 && this.lastId !== null) return "resync";  // a position this replica never issued
      if (FATAL.has(response.status)) {
        this.handlers.onFatal(answer);
        return "fatal";
      }
      if (response.status === 404) {
        this.handlers.onFatal(answer);
        await new Promise((resolve) => setTimeout(resolve, ABSENT_RETRY_MS));
        return "absent";
      }
      this.handlers.onState("reconnecting", describeProblem(answer));
      return "retry";
    }
    return this.read(response, controller, fresh);
  }

  async read(response, controller, fresh) {
    const parser = new SseParser();
    parser.lastId = this.lastId;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    let watchdog = setTimeout(() => controller.abort(), SILENT_MS);
    try {
      for (;;) {
        const {value, done} = await reader.read();
        if (done) return "retry";  // the node closed it (stopping, say): resume where we are
        clearTimeout(watchdog);
        watchdog = setTimeout(() => controller.abort(), SILENT_MS);
        buffered += decoder.decode(value, {stream: true});
        const lines = buffered.split(/\r\n|\r|\n/);
        buffered = lines.pop();
        for (const line of lines) {
          const item = parser.feed(line);
          if (item === null) continue;
          const verdict = this.take(item, fresh);
          if (verdict) return verdict;
        }
      }
    } catch (e) {
      return "retry";
    } finally {
      clearTimeout(watchdog);
      controller.abort();
    }
  }

  // One comment or event; a verdict ends the connection.
  take(item, fresh) {
    if (item.comment !== undefined) {
      const m = SUBSCRIBED_AFTER.exec(item.comment);
      if (m) {
        // Before the first event, a reconnect must start here, not at "now": changes in between would be lost.
        if (this.lastId === null) this.lastId = m[1];
        this.failures = 0;
        this.handlers.onState("live", "");
        this.handlers.onSubscribed(fresh);
      }
      return null;
    }
    if (item.event === "change") {
      this.handlers.onChange(JSON.parse(item.data));
      if (item.id !== null) this.lastId = item.id;
      return null;
    }
    if (item.event === "error" || item.event === "slow-consumer") {
      let problem;
      try { problem = JSON.parse(item.data); } catch (e) { problem = {detail: item.data}; }
      if (RESYNC_TYPES.has(problem.type) || item.event === "slow-consumer") {
        this.handlers.onState("resyncing", problem.detail || problem.type || "");
        return "resync";
      }
      if (problem.status === 401 || problem.status === 403) {
        this.handlers.onFatal({ok: false, status: problem.status, body: problem});
        return "fatal";
      }
      this.handlers.onState("reconnecting", problem.detail || "");
      return "retry";
    }
    return null;
  }
}
