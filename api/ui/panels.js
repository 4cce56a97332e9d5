// The panels beside the box: physics, model, replicas, bodies and surprises. Each is rebuilt
// whole from what the page last read; none holds state of its own.
"use strict";

function fmt(v, digits) {
  return typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits === undefined ? 2 : digits) : "–";
}

function rows(table, items) {
  table.replaceChildren(...items.map((cells) => el("tr", {}, ...cells.map((c) =>
    c instanceof Node && c.tagName === "TH" ? c : el("td", {}, c)))));
}

function problemLine(answer) {
  return answer && !answer.ok ? el("p", {class: "problem"}, describeProblem(answer)) : null;
}

function renderPhysics(node, physics) {
  if (!physics) return node.replaceChildren(el("p", {class: "muted"}, "reading…"));
  if (!physics.ok) return node.replaceChildren(problemLine(physics));
  const doc = physics.body;
  const table = el("table", {class: "kv"});
  rows(table, [
    [el("th", {}, "revision"), el("span", {"data-physics-revision": ""}, String(doc.revision))],
    [el("th", {}, "gravity"), fmt(doc.physics.gravity) + " m/s²"],
    [el("th", {}, "restitution"), fmt(doc.physics.restitution)],
    [el("th", {}, "drag"), fmt(doc.physics.drag) + " 1/s"],
    [el("th", {}, "time step"), fmt(doc.physics.time_step, 3) + " s"],
    [el("th", {}, "read"), doc.consistency],
  ]);
  node.replaceChildren(table);
}

function renderModel(node, model, predict) {
  const parts = [];
  if (!model) parts.push(el("p", {class: "muted"}, "reading…"));
  else if (!model.ok) parts.push(problemLine(model));
  else if (model.body.state !== "ok") parts.push(el("p", {class: "problem"}, "no model loaded" +
    (model.body.error ? ": " + model.body.error : "")));
  else {
    const m = model.body;
    const table = el("table", {class: "kv"});
    rows(table, [
      [el("th", {}, "hash"), el("code", {title: m.hash, "data-model-hash": m.hash}, m.hash.slice(0, 12))],
      [el("th", {}, "version"), String(m.version)],
      [el("th", {}, "manifest rev."), String(m.manifest_revision)],
      [el("th", {}, "device"), m.device],
    ]);
    parts.push(table);
  }
  if (predict && !predict.ok) parts.push(el("p", {class: "problem"}, "predict: " + describeProblem(predict)));
  else if (predict && predict.ok) {
    const skipped = Object.keys(predict.body.skipped || {});
    parts.push(el("p", {class: "muted"}, `predicting ${predict.body.horizon} steps of ${predict.body.time_step} s` +
      (skipped.length ? `; left out: ${skipped.join(", ")}` : "")));
  }
  node.replaceChildren(...parts);
}

// This node's replica, its watermark per origin region, and each peer it ships to.
function renderReplicas(node, ready, reflects) {
  if (!ready) return node.replaceChildren(el("p", {class: "muted"}, "reading…"));
  if (ready.status === 0) return node.replaceChildren(problemLine(ready));
  const r = ready.body;
  const tiers = r.tiers || {};
  const ap = tiers.ap || {}, cp = tiers.cp || {};
  const head = el("p", {}, `node ${r.node} in region ${r.region}: `,
    el("span", {class: cp.state === "ok" ? "ok" : "bad"}, `CP ${cp.state}` + (cp.revision ? ` @${cp.revision}` : "")),
    " · ",
    el("span", {class: ap.state === "ok" ? "ok" : "bad"}, `AP ${ap.state}`));
  const watermark = (reflects && reflects.watermark) || {};
  const peers = ap.peers || {};
  const regions = [...new Set([ap.replica, ...Object.keys(watermark), ...Object.keys(peers)])].filter(Boolean).sort();
  const table = el("table", {class: "grid"});
  const header = el("tr", {}, ...["region", "applied here up to", "shipped to it up to", "lag", "state"]
    .map((h) => el("th", {}, h)));
  const body = regions.map((region) => {
    const peer = peers[region];
    const here = region === ap.replica;
    const state = here ? "this replica" : !peer ? "–" : !peer.reachable ? "unreachable"
      : peer.behind ? "behind" : "caught up";
    return el("tr", {"data-region": region},
      el("td", {}, region),
      el("td", {}, el("code", {}, watermark[region] || "–")),
      el("td", {}, el("code", {}, peer ? peer.acked : "–")),
      el("td", {}, peer ? `${peer.lag_ms} ms` : "–"),
      el("td", {class: here || (peer && peer.reachable && !peer.behind) ? "ok" : "bad"}, state));
  });
  table.replaceChildren(header, ...body);
  const behind = ap.behind && ap.behind.length ? el("p", {class: "bad"}, "peers behind: " + ap.behind.join(", "))
    : el("p", {class: "muted"}, "no peer behind");
  node.replaceChildren(head, el("div", {class: "scroll"}, table), behind);
}

// `skipped`: the entities the last prediction left out, with the fields the model could not use.
function renderBodies(node, bodies, skipped) {
  if (!bodies.length) return node.replaceChildren(el("p", {class: "muted"}, "no entities yet"));
  const table = el("table", {class: "grid"});
  const header = el("tr", {}, ...["entity", "x", "y", "vx", "vy", ""].map((h) => el("th", {}, h)));
  const body = bodies.map((b) => el("tr", {class: b.surprise ? "surprising" : ""},
    el("td", {}, b.id), ...[b.x, b.y, b.vx, b.vy].map((v) => el("td", {}, fmt(v))),
    el("td", {class: "muted"}, b.missing.length ? "lacks " + b.missing.join(", ")
      : b.surprise ? `${b.surprise.distance.toFixed(2)} m off its path`
      : skipped[b.id] ? "left out by the model: " + skipped[b.id].join(", ") : b.path ? "predicted" : "")));
  table.replaceChildren(header, ...body);
  node.replaceChildren(el("div", {class: "scroll"}, table));
}

function renderSurprises(node, surprises) {
  if (!surprises.length) {
    return node.replaceChildren(el("p", {class: "muted"},
      `none yet: an observation more than ${SURPRISE_M} m from every point of the path the model ` +
      "predicted for the body"));
  }
  const items = surprises.slice().reverse().map((s) => el("li", {},
    el("strong", {}, s.entity), ` ${s.distance.toFixed(2)} m off its predicted path at `,
    new Date(s.at).toLocaleTimeString()));
  node.replaceChildren(el("ul", {class: "surprises"}, ...items));
}
