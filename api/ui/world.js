// The live view of one world: wires the entity subscription, the polls and the model's
// predictions to the drawing and the panels, and exposes window.worldstateView (read-only
// counters a test or a person at the console can watch).
"use strict";

const HORIZON = 40;  // steps drawn ahead of each body (capped by the model's max_horizon)
const PREDICT_EVERY_MS = 1000;  // at most one predict a second for all bodies, and only after a move
const PREDICT_RETRY_MS = 5000;  // after a refused predict (no model, physics out of range)
const READY_EVERY_MS = 2000;
const PHYSICS_EVERY_MS = 3000;
const MODEL_EVERY_MS = 5000;

const page = {
  world: decodeURIComponent(location.pathname.replace(/\/+$/, "").split("/").pop()),
  bodies: new Bodies(),
  drawing: null,
  stream: null,
  physics: null, model: null, manifestHash: null, ready: null, reflects: null, predict: null,
  horizon: HORIZON,
  predictions: 0,
  listings: 0,
  predictAfter: 0,
  streamState: "connecting", streamDetail: "",
  fatal: null,
  renderPending: false,
};

window.worldstateView = Object.freeze({});

function publishView() {
  const c = page.bodies.counts();
  window.worldstateView = Object.freeze({
    world: page.world, bodies: c.bodies, entities: c.entities, predicted: c.predicted,
    surprising: c.surprising, surprises: c.surprises, predictions: page.predictions, listings: page.listings,
    physicsRevision: page.physics && page.physics.ok ? page.physics.body.revision : null,
    modelHash: page.model && page.model.ok ? page.model.body.hash || null : null,
    frames: page.drawing ? page.drawing.frames : 0, stream: page.streamState,
    error: page.fatal ? {status: page.fatal.status, type: page.fatal.body.type || null} : null,
  });
}

function render() {
  if (page.renderPending) return;
  page.renderPending = true;
  requestAnimationFrame(() => {
    page.renderPending = false;
    const bodies = page.bodies.all();
    page.drawing.update(bodies);
    renderPhysics(document.getElementById("physics"), page.physics);
    renderModel(document.getElementById("model"), page.model, page.predict);
    renderReplicas(document.getElementById("replicas"), page.ready, page.reflects);
    renderBodies(document.getElementById("bodies"), bodies,
                 page.predict && page.predict.ok ? page.predict.body.skipped || {} : {});
    renderSurprises(document.getElementById("surprises"), page.bodies.surprises);
    renderStatus();
    publishView();
  });
}

function renderStatus() {
  const status = document.getElementById("status");
  const state = page.fatal ? "error" : page.streamState;
  status.className = "status " + state;
  status.textContent = page.fatal ? describeProblem(page.fatal)
    : state + (page.streamDetail ? ": " + page.streamDetail : "");
  const banner = document.getElementById("problem");
  banner.hidden = !page.fatal;
  if (page.fatal) {
    banner.textContent = describeProblem(page.fatal) + (page.fatal.status === 404 ? " (asked again every 5 s)" : "");
  }
}

// The entities as the replica holds them now, every page of them.
async function listEntities() {
  page.listings += 1;
  let after = null;
  for (;;) {
    const query = "?limit=1000" + (after ? "&after=" + encodeURIComponent(after) : "");
    const answer = await callApi(worldPath(page.world) + "/entities" + query);
    if (!answer.ok) return fail(answer);
    for (const item of answer.body.items) page.bodies.applyListed(item);
    page.reflects = answer.body;
    if (!answer.body.next) break;
    after = answer.body.next.after;
  }
  render();
}

function fail(answer) {
  if (answer.status === 401 || answer.status === 403) {
    showKeyBox(document.getElementById("keybox"), describeProblem(answer));
  }
  if ([400, 401, 403, 404].includes(answer.status)) page.fatal = answer;
  render();
}

async function predictLoop() {
  for (;;) {
    await sleep(PREDICT_EVERY_MS);
    if (page.fatal || !page.bodies.moved || Date.now() < page.predictAfter) continue;
    if (page.bodies.counts().bodies === 0) continue;
    page.bodies.moved = false;
    const asked = page.bodies.snapshot();
    const answer = await callApi(worldPath(page.world) + "/predict", {method: "POST", json: {horizon: page.horizon}});
    page.predict = answer;
    if (answer.ok) {
      page.bodies.takePrediction(answer.body.trajectories, asked);
      page.reflects = Object.assign({}, page.reflects, answer.body.provenance.ap);
      page.predictions += 1;
    } else {
      page.bodies.moved = true;  // ask again once the cause may be gone
      page.predictAfter = Date.now() + PREDICT_RETRY_MS;
    }
    render();
  }
}

async function physicsLoop() {
  for (;;) {
    if (!page.fatal) {
      const answer = await callApi(worldPath(page.world) + "/physics");
      const before = page.physics && page.physics.ok ? page.physics.body.revision : null;
      page.physics = answer;
      if (answer.ok) {
        page.drawing.gravity = answer.body.physics.gravity;
        if (answer.body.revision !== before) page.bodies.moved = true;  // predict again under the new physics
      }
      render();
    }
    await sleep(PHYSICS_EVERY_MS);
  }
}

async function modelLoop() {
  for (;;) {
    const answer = await callApi("/v1/models/current");
    page.model = answer;
    const hash = answer.ok ? answer.body.hash || null : null;
    if (hash && hash !== page.manifestHash) {
      // The box and the longest horizon are the model's: its manifest's config says them.
      const manifest = await callApi("/v1/models/manifest");
      if (manifest.ok) {
        const config = manifest.body.manifest.config || {};
        if (config.sim && config.sim.box) page.drawing.box = config.sim.box;
        if (config.model && config.model.max_horizon) page.horizon = Math.min(HORIZON, config.model.max_horizon);
        page.manifestHash = hash;
        page.bodies.moved = true;  // predict again with the model now served
      }
    }
    render();
    await sleep(MODEL_EVERY_MS);
  }
}

async function readyLoop() {
  for (;;) {
    page.ready = await callApi("/readyz");
    if (!page.fatal) {  // the watermark and replication the replica reports with a read
      const answer = await callApi(worldPath(page.world) + "/entities?limit=1");
      if (answer.ok) page.reflects = answer.body;
    }
    render();
    await sleep(READY_EVERY_MS);
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function main() {
  takeKeyFromFragment();
  document.title = page.world + " · worldstate";
  document.getElementById("world-name").textContent = page.world;
  const keybox = document.getElementById("keybox");
  installKeyBox(keybox, () => location.reload());
  document.getElementById("show-key").addEventListener("click", () => showKeyBox(keybox, ""));
  page.drawing = new Drawing(document.getElementById("box"));
  page.stream = new EntityStream(page.world, {
    onSubscribed: (fresh) => {
      // From now: start again from what the replica holds (a resync drops what it may have missed).
      if (!fresh) return;
      page.bodies = new Bodies();
      listEntities();
    },
    onChange: (change) => { page.bodies.applyChange(change); render(); },
    onState: (state, detail) => {
      if (state === "live") page.fatal = null;  // a world that was missing (404) exists now
      page.streamState = state;
      page.streamDetail = detail;
      render();
    },
    onFatal: (answer) => fail(answer),
  });
  page.stream.start();
  predictLoop();
  physicsLoop();
  modelLoop();
  readyLoop();
  render();
}

main();
