// The box drawn on a canvas: bodies where they were last observed (sliding there as each
// observation arrives), their recent trail, the path the model predicts for them, and a red
// mark where an observation left the predicted path.
"use strict";

const SLIDE_MS = 250;  // a body slides to its new position over this long, so motion reads as motion
const COLORS = ["#2f6fde", "#e07b00", "#1a9c5b", "#9b4dca", "#c9a100", "#0097a7", "#d6336c", "#5c7080"];
const SURPRISE_COLOR = "#e03131";

function colorOf(id) {
  let h = 0;
  for (let i = 0; i < id.length; i++) h = (h * 31 + id.charCodeAt(i)) >>> 0;
  return COLORS[h % COLORS.length];
}

class Drawing {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.box = 10;  // metres; the model's box (its manifest's config.sim.box) once known
    this.slides = new Map();  // id -> {from, to, t0}
    this.frames = 0;
    this.pending = false;
    this.bodies = [];
    this.gravity = null;
    new ResizeObserver(() => this.request()).observe(canvas);
  }

  // The bodies to draw (Bodies.all()); starts a slide for each that moved.
  update(bodies) {
    const now = performance.now();
    for (const b of bodies) {
      if (b.missing.length) continue;
      const slide = this.slides.get(b.id);
      const target = [b.x, b.y];
      if (!slide) {
        this.slides.set(b.id, {from: target, to: target, t0: now});
      } else if (slide.to[0] !== target[0] || slide.to[1] !== target[1]) {
        this.slides.set(b.id, {from: this.shown(slide, now), to: target, t0: now});
      }
    }
    const present = new Set(bodies.map((b) => b.id));
    for (const id of [...this.slides.keys()]) if (!present.has(id)) this.slides.delete(id);
    this.bodies = bodies;
    // Drawn now, not at the next frame: whoever reads the page after this update (a test, through
    // window.worldstateView) finds it on the canvas. A slide still under way asks for more frames.
    if (this.draw(now)) this.request();
  }

  shown(slide, now) {
    const t = Math.min(1, (now - slide.t0) / SLIDE_MS);
    const ease = t * (2 - t);
    return [slide.from[0] + (slide.to[0] - slide.from[0]) * ease, slide.from[1] + (slide.to[1] - slide.from[1]) * ease];
  }

  request() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      const sliding = this.draw(performance.now());
      if (sliding) this.request();
    });
  }

  // Fit the canvas's pixels to its size on screen; returns the scale (pixels per metre) and margin.
  fit() {
    const dpr = window.devicePixelRatio || 1;
    const side = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
    if (this.canvas.width !== side || this.canvas.height !== side) {
      this.canvas.width = side;
      this.canvas.height = side;
    }
    const margin = 6 * dpr;
    return {dpr: dpr, margin: margin, scale: (side - 2 * margin) / this.box, side: side};
  }

  // Returns whether a body is still sliding (another frame is needed).
  draw(now) {
    const ctx = this.ctx;
    const f = this.fit();
    const px = (p) => [f.margin + p[0] * f.scale, f.side - f.margin - p[1] * f.scale];
    ctx.clearRect(0, 0, f.side, f.side);
    this.drawBox(ctx, f, px);
    let sliding = false;
    const drawable = this.bodies.filter((b) => b.missing.length === 0);
    for (const b of drawable) this.drawTrail(ctx, f, px, b);
    for (const b of drawable) this.drawPath(ctx, f, px, b);
    for (const b of drawable) {
      const slide = this.slides.get(b.id);
      const at = slide ? this.shown(slide, now) : [b.x, b.y];
      if (slide && now - slide.t0 < SLIDE_MS) sliding = true;
      this.drawBody(ctx, f, px, b, at);
    }
    for (const b of drawable) if (b.surprise) this.drawSurprise(ctx, f, px, b);
    if (!drawable.length) {
      ctx.fillStyle = "#6b7280";
      ctx.font = `${14 * f.dpr}px system-ui, sans-serif`;
      ctx.textAlign = "center";
      ctx.fillText("no bodies with x, y, vx, vy observed yet", f.side / 2, f.side / 2);
    }
    this.frames += 1;
    return sliding;
  }

  drawBox(ctx, f, px) {
    ctx.fillStyle = "#fbfcfe";
    ctx.fillRect(f.margin, f.margin, f.side - 2 * f.margin, f.side - 2 * f.margin);
    ctx.strokeStyle = "#e5e9f0";
    ctx.lineWidth = 1 * f.dpr;
    for (let m = 1; m < this.box; m++) {
      const [x0, y0] = px([m, 0]), [x1, y1] = px([m, this.box]);
      ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke();
      const [a0, b0] = px([0, m]), [a1, b1] = px([this.box, m]);
      ctx.beginPath(); ctx.moveTo(a0, b0); ctx.lineTo(a1, b1); ctx.stroke();
    }
    ctx.strokeStyle = "#3b4252";
    ctx.lineWidth = 2 * f.dpr;
    ctx.strokeRect(f.margin, f.margin, f.side - 2 * f.margin, f.side - 2 * f.margin);
    if (this.gravity) {  // which way is down, and how hard
      ctx.fillStyle = "#6b7280";
      ctx.font = `${11 * f.dpr}px system-ui, sans-serif`;
      ctx.textAlign = "right";
      ctx.fillText(`g ${this.gravity} m/s² ↓`, f.side - f.margin - 6 * f.dpr, f.margin + 16 * f.dpr);
    }
  }

  drawTrail(ctx, f, px, b) {
    ctx.fillStyle = colorOf(b.id);
    b.trail.forEach((p, i) => {
      const [x, y] = px(p);
      ctx.globalAlpha = 0.08 + 0.3 * (i / b.trail.length);
      ctx.beginPath(); ctx.arc(x, y, 2.5 * f.dpr, 0, 2 * Math.PI); ctx.fill();
    });
    ctx.globalAlpha = 1;
  }

  drawPath(ctx, f, px, b) {
    if (!b.path || !b.path.length) return;
    const points = (b.pathFrom ? [b.pathFrom] : []).concat(b.path);
    ctx.strokeStyle = colorOf(b.id);
    ctx.globalAlpha = b.pathStale ? 0.35 : 0.9;
    ctx.lineWidth = 2 * f.dpr;
    ctx.setLineDash([6 * f.dpr, 4 * f.dpr]);
    ctx.beginPath();
    points.forEach((p, i) => {
      const [x, y] = px(p);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = colorOf(b.id);
    b.path.forEach((p, i) => {  // a tick every 5 steps, to read the path as time
      if ((i + 1) % 5) return;
      const [x, y] = px(p);
      ctx.beginPath(); ctx.arc(x, y, 3 * f.dpr, 0, 2 * Math.PI); ctx.fill();
    });
    const [ex, ey] = px(b.path[b.path.length - 1]);  // where the body ends up
    ctx.beginPath(); ctx.arc(ex, ey, b.radius * f.scale, 0, 2 * Math.PI);
    ctx.setLineDash([2 * f.dpr, 3 * f.dpr]); ctx.lineWidth = 1 * f.dpr; ctx.stroke(); ctx.setLineDash([]);
    ctx.globalAlpha = 1;
  }

  drawBody(ctx, f, px, b, at) {
    const [x, y] = px(at);
    const r = Math.max(3 * f.dpr, b.radius * f.scale);
    ctx.fillStyle = colorOf(b.id);
    ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.fill();
    ctx.strokeStyle = "#ffffff";
    ctx.lineWidth = 1.5 * f.dpr;
    ctx.stroke();
    const [vx, vy] = [b.vx * f.scale * 0.25, -b.vy * f.scale * 0.25];  // a quarter second of motion
    ctx.strokeStyle = "#1f2937";
    ctx.beginPath(); ctx.moveTo(x, y); ctx.lineTo(x + vx, y + vy); ctx.stroke();
    ctx.fillStyle = "#1f2937";
    ctx.font = `${11 * f.dpr}px system-ui, sans-serif`;
    ctx.textAlign = "center";
    ctx.fillText(b.id, x, y - r - 4 * f.dpr);
  }

  drawSurprise(ctx, f, px, b) {
    const s = b.surprise;
    const [ox, oy] = px(s.observed), [ex, ey] = px(s.expected);
    ctx.strokeStyle = SURPRISE_COLOR;
    ctx.lineWidth = 3 * f.dpr;
    ctx.beginPath(); ctx.arc(ox, oy, b.radius * f.scale + 5 * f.dpr, 0, 2 * Math.PI); ctx.stroke();
    ctx.setLineDash([4 * f.dpr, 3 * f.dpr]);
    ctx.lineWidth = 1.5 * f.dpr;
    ctx.beginPath(); ctx.moveTo(ex, ey); ctx.lineTo(ox, oy); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = SURPRISE_COLOR;
    ctx.font = `bold ${11 * f.dpr}px system-ui, sans-serif`;
    ctx.textAlign = "left";
    ctx.fillText(`${s.distance.toFixed(2)} m off`, ox + b.radius * f.scale + 8 * f.dpr, oy + 4 * f.dpr);
  }
}
