// What the page knows of a world's entities, merged as the replica merges them, and how far
// each new observation lands from the path the model last predicted for it.
//
// Fields are last-writer-wins registers ordered by "hlc|node" (as the Lua merges order them),
// so a change the listing already holds, delivered again by the stream, changes nothing, and
// a delete hides only the fields written before it.
"use strict";

const STATE = ["x", "y", "vx", "vy"];
const TRAIL = 24;  // past positions drawn behind a body
// An observation this far (m) from every point of the body's predicted path is surprising.
// The shipped model's position error is 4 cm at 20 steps (README, "How well it works"): half a
// metre is far outside it, and inside the distance a body covers between two frames at 10 m/s.
const SURPRISE_M = 0.5;
// A mark stays at least this long, so a person sees it: observations come several times a second.
const SURPRISE_SHOW_MS = 3000;

function orderKey(hlc, node) {
  return (hlc || "") + "|" + (node || "");
}

// Milliseconds of an HLC "wwwwwwwwwwww-llll" (its wall-clock part).
function hlcMs(hlc) {
  return hlc ? parseInt(hlc.split("-")[0], 16) : 0;
}

function isNum(v) {
  return typeof v === "number" && Number.isFinite(v);
}

// The distance from point p to the polyline through `points`, and the nearest point on it.
function distanceToPath(p, points) {
  let best = {d: Infinity, at: points[0]};
  for (let i = 0; i < points.length; i++) {
    const a = points[i];
    const b = points[Math.min(i + 1, points.length - 1)];
    const dx = b[0] - a[0], dy = b[1] - a[1];
    const len2 = dx * dx + dy * dy;
    const t = len2 > 0 ? Math.max(0, Math.min(1, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2)) : 0;
    const q = [a[0] + t * dx, a[1] + t * dy];
    const d = Math.hypot(p[0] - q[0], p[1] - q[1]);
    if (d < best.d) best = {d: d, at: q};
  }
  return best;
}

class Bodies {
  constructor() {
    this.entities = new Map();  // id -> {fields: {name: {value, key}}, tombstone, trail, path, surprise}
    this.moved = false;  // a position changed since the last prediction was asked for
    this.surprises = [];  // the newest last: {entity, distance, at, observed, expected}
  }

  entry(id) {
    let e = this.entities.get(id);
    if (!e) {
      e = {fields: {}, tombstone: "", trail: [], path: null, pathFrom: null, pathStale: false, surprise: null,
           changedAt: 0};
      this.entities.set(id, e);
    }
    return e;
  }

  // One item of GET .../entities: fields with their hlc and node.
  applyListed(item) {
    const e = this.entry(item.entity);
    const before = this.position(item.entity);
    for (const [name, f] of Object.entries(item.fields || {})) {
      this.setField(e, name, f.value, orderKey(f.hlc, f.node));
    }
    this.afterWrite(item.entity, e, before, false);
  }

  // One change event of the subscription.
  applyChange(change) {
    const e = this.entry(change.entity);
    const before = this.position(change.entity);
    const key = orderKey(change.hlc, change.node);
    if (change.deleted) {
      if (key > e.tombstone) e.tombstone = key;
      for (const [name, f] of Object.entries(e.fields)) {
        if (f.key <= e.tombstone) delete e.fields[name];
      }
    } else {
      for (const [name, value] of Object.entries(change.fields || {})) this.setField(e, name, value, key);
    }
    e.changedAt = hlcMs(change.hlc);
    this.afterWrite(change.entity, e, before, true);
  }

  setField(e, name, value, key) {
    const current = e.fields[name];
    if (key <= e.tombstone) return;
    if (!current || key > current.key) e.fields[name] = {value: value, key: key};
  }

  afterWrite(id, e, before, live) {
    if (!Object.keys(e.fields).length) {
      this.entities.delete(id);
      this.moved = true;
      return;
    }
    const after = this.position(id);
    if (!after || (before && before[0] === after[0] && before[1] === after[1])) return;
    this.moved = true;
    e.trail.push(after);
    if (e.trail.length > TRAIL) e.trail.shift();
    if (live) this.judge(id, e, after);
  }

  // Is this observation where the model said the body would go? Judged against the path the
  // model predicted from an earlier state of the body; a body with no path yet is not judged.
  judge(id, e, observed) {
    if (!e.path || e.path.length === 0) return;
    const points = e.pathFrom ? [e.pathFrom].concat(e.path) : e.path;
    const near = distanceToPath(observed, points);
    if (near.d > SURPRISE_M) {
      e.surprise = {entity: id, distance: near.d, observed: observed, expected: near.at, at: Date.now()};
      this.surprises.push(e.surprise);
      if (this.surprises.length > 20) this.surprises.shift();
      // The path no longer says where the body goes: the observations after this one are judged
      // against the next prediction, made from here, not against this path again.
      e.path = null;
    } else {
      if (e.surprise && Date.now() - e.surprise.at >= SURPRISE_SHOW_MS) e.surprise = null;
      // Predicted from a state that is no longer the newest, but still where the body should go:
      // kept (drawn dimmer) and judged against until the next prediction.
      e.pathStale = true;
    }
  }

  position(id) {
    const e = this.entities.get(id);
    if (!e) return null;
    const x = e.fields.x && e.fields.x.value, y = e.fields.y && e.fields.y.value;
    return isNum(x) && isNum(y) ? [x, y] : null;
  }

  // A body the model can take: numeric x, y, vx, vy (radius 0.5 and mass 1.0 by default).
  body(id) {
    const e = this.entities.get(id);
    if (!e) return null;
    const v = (name) => e.fields[name] && e.fields[name].value;
    const missing = STATE.filter((name) => !isNum(v(name)));
    return {
      id: id, x: v("x"), y: v("y"), vx: v("vx"), vy: v("vy"),
      radius: isNum(v("radius")) && v("radius") > 0 ? v("radius") : 0.5,
      missing: missing, path: e.path, pathFrom: e.pathFrom, pathStale: e.pathStale, trail: e.trail,
      surprise: e.surprise,
    };
  }

  all() {
    return [...this.entities.keys()].sort().map((id) => this.body(id));
  }

  // A predict answer: each body's predicted positions, from the position it had when asked.
  takePrediction(trajectories, asked) {
    for (const [id, e] of this.entities) {
      if (!(id in trajectories)) e.path = null;  // left out of the prediction (skipped, or new since)
    }
    for (const [id, t] of Object.entries(trajectories)) {
      const e = this.entities.get(id);
      if (!e) continue;
      e.path = t.positions;
      e.pathFrom = asked[id] || null;
      e.pathStale = false;
    }
  }

  snapshot() {
    const out = {};
    for (const id of this.entities.keys()) out[id] = this.position(id);
    return out;
  }

  counts() {
    const list = this.all();
    return {
      bodies: list.filter((b) => b.missing.length === 0).length,
      entities: list.length,
      predicted: list.filter((b) => b.path && b.path.length).length,
      surprising: list.filter((b) => b.surprise).length,
      surprises: this.surprises.length,
    };
  }
}
