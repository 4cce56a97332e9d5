"""How an evaluation result reads: the printed table, the PNG and the JSON form.

Everything here works on the dict `evaluate.evaluate` returns, and the table
also on that dict read back from the JSON (sections that did not run are
left out).
"""
from __future__ import annotations

import math
import os
from typing import Any

HORIZONS = ("1", "5", "10", "20")
PREDICTORS = (("model", "model"), ("constant_velocity", "constant velocity"), ("supervised_mlp", "supervised MLP"))


def _num(v: Any, width: int = 7, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return f"{'-':>{width}}"
    return f"{v:{width}.{digits}f}"


def _row(values: dict[str, float] | None) -> str:
    return "".join(_num(None if values is None else values[h]) for h in HORIZONS)


def _rollout(r: dict[str, Any]) -> list[str]:
    block = 7 * len(HORIZONS)
    head = f"{'':25}" + " | ".join(f"{label:^{block}}" for _, label in PREDICTORS)
    hs = "".join(f"{'h=' + h:>7}" for h in HORIZONS)
    lines = [f"rollout: mean position error (m) over present bodies, no actions; MLP baseline "
             f"{r['mlp_steps']} steps ({r['mlp_train_seconds']} s)", head,
             f"{'family':18}{'cases':>7}" + " | ".join([hs] * len(PREDICTORS))]
    rows = [(f, row, str(row["cases"])) for f, row in r["families"].items()]
    rows += [("overall (mean)", r["overall"], ""), ("collisions", r["collisions"], "")]
    for name, row, cases in rows:
        lines.append(f"{name:18}{cases:>7}" + " | ".join(_row(row.get(k)) for k, _ in PREDICTORS))
    lines.append(f"{'ratios':25}{'model / constant velocity':^{block}} | {'model / supervised MLP':^{block}}")
    for name, row, _ in rows:
        lines.append(f"{name:25}{_row(row['ratio_vs_cv'])} | {_row(row.get('ratio_vs_mlp'))}")
    return lines


def _plausibility(p: dict[str, Any]) -> list[str]:
    lines = ["plausibility (rate = violations / cases, target 0)"]
    for name, v in p.items():
        extra = ""
        if "per_family" in v:
            extra = "  " + ", ".join(f"{f} {n}" for f, n in v["per_family"].items() if n)
        lines.append(f"  {name:22}{v['violations']:>6} / {v['cases']:<6}{_num(v['rate'])}{extra}")
    return lines


def _surprise(s: dict[str, Any]) -> list[str]:
    lines = [f"surprise over {s['observed_steps']} observed steps, {s['cases_per_kind']} cases per kind; "
             f"threshold {s['threshold']:.4g}, false alarms on normal windows {s['false_alarm_rate']:.3f}",
             f"  {'kind':22}{'AUROC':>7}{'detected':>10}{'median':>10}"]
    for kind, a in s["auroc"].items():
        lines.append(f"  {kind:22}{_num(a)}{_num(s['detection_rate'][kind], 10)}"
                     f"{s['median_score'][kind]:10.4g}")
    for kind in ("normal", "normal_near_wall"):
        lines.append(f"  {kind:22}{'':17}{s['median_score'][kind]:10.4g}")
    return lines


def _planning(p: dict[str, Any]) -> list[str]:
    lines = [f"planning in the simulator: {p['episodes']} episodes, {p['steps']} steps, re-plan every "
             f"{p['replan_every']}, goal radius {p['goal_radius_m']} m, budget {p['budget_per_replan']}"]
    for k, v in p["success_rate"].items():
        lines.append(f"  {k:22}success {v:6.3f}   mean final distance {p['mean_final_distance_m'][k]:.2f} m")
    o = p["open_loop"]
    lines.append(f"  open-loop plan: predicted reach {o['predicted_reach_rate']:.3f}, true reach "
                 f"{o['true_reach_rate']:.3f}, agreement {o['agreement']:.3f}; median final distance "
                 f"predicted {o['predicted_distance_median_m']:.2f} m, true {o['true_distance_median_m']:.2f} m")
    return lines


def format_table(res: dict[str, Any]) -> str:
    lines = [f"model {str(res.get('model_hash'))[:12]}, seed {res['seed']}"]
    if "rollout" in res:
        lines += _rollout(res["rollout"])
    if "plausibility" in res:
        lines += _plausibility(res["plausibility"])
    if "invariance" in res:
        v = res["invariance"]
        lines.append(f"invariance: body 0 with vs without far bodies ({v['cases']} cases): max over steps of "
                     f"the position difference, median {v['median_m']:.4f} m, max {v['max_m']:.4f} m")
    if "surprise" in res:
        lines += _surprise(res["surprise"])
    if "planning" in res:
        lines += _planning(res["planning"])
    t = res.get("targets", {})
    lines.append(f"targets ({sum(v['pass'] for v in t.values())}/{len(t)} pass)")
    for name, v in t.items():
        val = "nan" if v["value"] is None else f"{v['value']:.4g}"
        lines.append(f"  {'PASS' if v['pass'] else 'FAIL'}  {name:38}{val:>10}  (target {v['target']})")
    return "\n".join(lines)


def for_json(res: dict[str, Any]) -> Any:
    """The result without the raw surprise scores, NaN and infinity as null."""
    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items() if k != "scores"}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, float) and not math.isfinite(x):
            return None
        return x

    return clean(res)


def plot(res: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Error vs horizon per family against the baselines, surprise histograms
    per impossible-event kind with the threshold, planning success bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = res.get("rollout", {}).get("families", {})
    kinds = list(res.get("surprise", {}).get("auroc", {}))
    panels = len(fams) + len(kinds) + ("planning" in res)
    cols = 4
    rows = max(1, math.ceil(panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    ax_iter = iter(axes.flat)
    hs = [int(h) for h in HORIZONS]
    for name, row in fams.items():
        ax = next(ax_iter)
        for key, label in PREDICTORS:
            if key in row:
                ax.plot(hs, [max(row[key][h], 1e-5) for h in HORIZONS], marker="o", label=label)
        # Log scale: a good model sits orders of magnitude below the baselines.
        ax.set(title=name, xlabel="horizon (steps)", ylabel="position error (m)", yscale="log")
        ax.legend(fontsize=7)
    if kinds:
        s = res["surprise"]
        sc = s.get("scores", {})
        normal = sc.get("normal", []) + sc.get("normal_near_wall", [])
        for kind in kinds:
            ax = next(ax_iter)
            vals = [max(v, 1e-6) for v in normal + sc.get(kind, [])] or [1e-6, 1.0]
            lo, hi = math.log10(min(vals)), math.log10(max(vals)) + 1e-3
            bins = [10 ** (lo + (hi - lo) * i / 40) for i in range(41)]
            ax.hist([max(v, 1e-6) for v in normal], bins=bins, histtype="step", label="normal")
            ax.hist([max(v, 1e-6) for v in sc.get(kind, [])], bins=bins, histtype="step", label=kind)
            if math.isfinite(s["threshold"]) and s["threshold"] > 0:
                ax.axvline(s["threshold"], color="k", ls="--", lw=1, label="threshold")
            ax.set(xscale="log", title=f"surprise: {kind} (AUROC {s['auroc'][kind]:.3f})", xlabel="score")
            ax.legend(fontsize=7)
    if "planning" in res:
        ax = next(ax_iter)
        sr = dict(res["planning"]["success_rate"])
        sr["open_loop\nagreement"] = res["planning"]["open_loop"]["agreement"]
        ax.bar(range(len(sr)), list(sr.values()))
        ax.set_xticks(range(len(sr)), [k.replace("_", "\n", 1) for k in sr], fontsize=7)
        ax.axhline(0.95, color="k", ls="--", lw=1)
        ax.set(ylim=(0, 1), ylabel="rate", title="planning (target 0.95)")
    for ax in ax_iter:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
