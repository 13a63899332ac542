"""Statistics of an accuracy study: mean +- std per config, differences to plain YOLOv5n, the issue's goal check.

A difference counts as "beyond noise" when it is larger than two standard errors of the difference of two means,
``2 * sqrt(s_a^2 / n_a + s_b^2 / n_b)`` with the sample standard deviations over seeds (with 3 seeds this is a
screen, not a significance test). Goal (issue "Accuracy on real photos"): the best attention config beats plain
YOLOv5n by >= 1.0 mAP50-95 point beyond noise at <= 1.25x plain's CPU latency, and beats ultralytics' A2C2f peer
(here also beyond noise) at equal or lower latency.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["GOAL_GAIN", "GOAL_LATENCY_RATIO", "goal_check", "interpretation", "summarize"]

GOAL_GAIN = 0.010  # 1.0 mAP50-95 point
GOAL_LATENCY_RATIO = 1.25
A2C2F_PEER = "yolov5n-A2C2f-ultralytics"


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _se_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> float | None:
    if a["map50_95_std"] is None or b["map50_95_std"] is None:
        return None
    return math.sqrt(a["map50_95_std"] ** 2 / a["runs"] + b["map50_95_std"] ** 2 / b["runs"])


def summarize(
    rows: Sequence[Mapping[str, Any]],
    roles: Mapping[str, str],
    costs: Mapping[str, Mapping[str, Any]] | None = None,
    order: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One row per config: runs, mean/std of mAP50-95 and mAP50, cost, time, and the comparison with plain.

    Args:
        rows: Ledger rows (one per finished run; values may be strings).
        roles: ``{config: "plain" | "attention" | "peer"}``.
        costs: ``{config: {"params_M", "gflops_640", "latency_ms"}}`` (missing values stay None).
        order: Preferred config order (others follow in order of appearance).

    Returns:
        Rows with ``config, role, runs, map50_95_mean, map50_95_std, map50_mean, map50_std, params_M, gflops_640,
        latency_ms, latency_x, d_map50_95, two_se, beyond_noise, epoch_s, wall_min, gpu_min``; ``d_map50_95`` and
        ``two_se`` are against plain (None where plain or a std is missing).

    Examples:
        >>> rows = [{"config": "yolov5n", "seed": s, "map50_95": m, "map50": m} for s, m in [(0, .1), (1, .2)]]
        >>> summarize(rows, {"yolov5n": "plain"})[0]["map50_95_mean"]
        0.15000000000000002
    """
    costs = costs or {}
    names = list(dict.fromkeys([n for n in order if any(r["config"] == n for r in rows)]
                               + [r["config"] for r in rows]))
    out = []
    for name in names:
        mine = [r for r in rows if r["config"] == name]
        m95 = [x for x in (_num(r.get("map50_95")) for r in mine) if x is not None]
        m50 = [x for x in (_num(r.get("map50")) for r in mine) if x is not None]
        c = costs.get(name, {})
        row = {"config": name, "role": roles.get(name, "attention"), "runs": len(m95)}
        row["map50_95_mean"], row["map50_95_std"] = _mean_std(m95)
        row["map50_mean"], row["map50_std"] = _mean_std(m50)
        row.update({k: _num(c.get(k)) for k in ("params_M", "gflops_640", "latency_ms")})
        for k in ("epoch_s", "wall_min", "gpu_min"):
            vals = [x for x in (_num(r.get(k)) for r in mine) if x is not None]
            row[k] = statistics.fmean(vals) if vals else None
        out.append(row)
    plain = next((r for r in out if r["role"] == "plain" and r["runs"]), None)
    for r in out:
        r["latency_x"] = r["d_map50_95"] = r["two_se"] = r["beyond_noise"] = None
        if plain is None or not r["runs"]:
            continue
        if r["latency_ms"] is not None and plain["latency_ms"]:
            r["latency_x"] = r["latency_ms"] / plain["latency_ms"]
        if r is plain:
            continue
        r["d_map50_95"] = r["map50_95_mean"] - plain["map50_95_mean"]
        se = _se_diff(r, plain)
        r["two_se"] = None if se is None else 2 * se
        r["beyond_noise"] = None if se is None else abs(r["d_map50_95"]) > 2 * se
    return out


def _pts(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f}"


def _size(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def goal_check(summary: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The issue's goal, criterion by criterion, for every attention config; the best one is reported.

    Args:
        summary: Rows of :func:`summarize`.

    Returns:
        ``{"status": "met" | "not met" | "cannot tell", "best": config or None, "checks": [(criterion, value,
        "yes" | "no" | "unknown")], "reason": str}`` where ``checks`` are the best config's.

    Examples:
        >>> goal_check([])["status"]
        'cannot tell'
    """
    plain = next((r for r in summary if r["role"] == "plain" and r["runs"]), None)
    ours = [r for r in summary if r["role"] == "attention" and r["runs"]]
    if plain is None or not ours:
        return {"status": "cannot tell", "best": None, "checks": [],
                "reason": "the study needs plain yolov5n and at least one attention config with finished runs"}
    peer = next((r for r in summary if r["config"] == A2C2F_PEER and r["runs"]), None)

    def checks(r: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        d, two_se = r["d_map50_95"], r["two_se"]
        out = [("gain over plain >= 1.0 mAP50-95 point", f"{_pts(d)} points", "yes" if d >= GOAL_GAIN else "no"),
               ("gain larger than 2 standard errors", f"2SE = {_size(two_se)}",
                "unknown" if two_se is None else "yes" if d > two_se else "no")]
        lx = r["latency_x"]
        out.append((f"CPU latency <= {GOAL_LATENCY_RATIO}x plain", "n/a" if lx is None else f"{lx:.2f}x",
                    "unknown" if lx is None else "yes" if lx <= GOAL_LATENCY_RATIO else "no"))
        if peer is None:
            out.append(("beats the A2C2f peer at equal or lower latency", "peer not in this study", "unknown"))
        else:
            dp = r["map50_95_mean"] - peer["map50_95_mean"]
            se = _se_diff(r, peer)
            faster = None if r["latency_ms"] is None or peer["latency_ms"] is None \
                else r["latency_ms"] <= peer["latency_ms"]
            ok = "unknown" if se is None or faster is None else "yes" if dp > 2 * se and faster else "no"
            lat = "" if faster is None else f", latency {r['latency_ms'] / peer['latency_ms']:.2f}x the peer's"
            out.append(("beats the A2C2f peer (beyond 2SE) at equal or lower latency",
                        f"{_pts(dp)} points (2SE {_size(None if se is None else 2 * se)}){lat}", ok))
        return out

    graded = [(r, checks(r)) for r in ours]
    met = [(r, c) for r, c in graded if all(s == "yes" for _, _, s in c)]
    open_ = [(r, c) for r, c in graded if all(s != "no" for _, _, s in c)]
    if met:
        best, c = max(met, key=lambda t: t[0]["map50_95_mean"])
        return {"status": "met", "best": best["config"], "checks": c, "reason": ""}
    within = [(r, c) for r, c in graded if c[2][2] != "no"] or graded
    best, c = max(open_ or within, key=lambda t: t[0]["map50_95_mean"])
    if open_:
        missing = [name for name, _, s in c if s == "unknown"]
        return {"status": "cannot tell", "best": best["config"], "checks": c,
                "reason": "unknown: " + "; ".join(missing)}
    return {"status": "not met", "best": best["config"], "checks": c,
            "reason": "no attention config meets every criterion"}


def interpretation(summary: Sequence[Mapping[str, Any]], goal: Mapping[str, Any], dataset: str) -> list[str]:
    """Markdown lines of the report's interpretation, written from the numbers.

    Args:
        summary: Rows of :func:`summarize`.
        goal: Result of :func:`goal_check`.
        dataset: Dataset name for the sentences.

    Returns:
        Markdown lines (no trailing blank line).

    Examples:
        >>> interpretation([], goal_check([]), "highway-320")[-1]
        'Plain yolov5n has no finished run yet: nothing can be compared.'
    """
    plain = next((r for r in summary if r["role"] == "plain" and r["runs"]), None)
    lines = ["## Interpretation", ""]
    if plain is None:
        return lines + ["Plain yolov5n has no finished run yet: nothing can be compared."]
    seeds = sorted({r["runs"] for r in summary if r["runs"]})
    lines.append(f"Plain yolov5n: mAP50-95 {100 * plain['map50_95_mean']:.2f} points on {dataset} "
                 f"(runs per config: {', '.join(map(str, seeds))}). A difference is beyond noise when it is larger "
                 "than two standard errors of the difference of the two means (2SE).")
    lines.append("")
    others = [r for r in summary if r is not plain and r["runs"]]
    better = [r for r in others if r["beyond_noise"] and r["d_map50_95"] > 0]
    worse = [r for r in others if r["beyond_noise"] and r["d_map50_95"] < 0]

    def say(r: Mapping[str, Any]) -> str:
        lat = "" if r["latency_x"] is None else f", {r['latency_x']:.2f}x plain's CPU latency"
        return f"`{r['config']}` ({_pts(r['d_map50_95'])} points, 2SE {_size(r['two_se'])}{lat})"

    ours_better = [r for r in better if r["role"] == "attention"]
    if ours_better:
        lines.append("Beats plain beyond noise: " + "; ".join(say(r) for r in ours_better) + ".")
    else:
        cand = [r for r in others if r["role"] == "attention" and r["d_map50_95"] is not None]
        top = max(cand, key=lambda r: r["d_map50_95"], default=None)
        if any(r["two_se"] is None for r in others):
            lines.append("Some configs have a single run: their noise is unknown (give at least 2 seeds).")
        lines.append(f"**No attention config beats plain yolov5n beyond noise on {dataset} with this schedule.**"
                     + (f" The largest difference is {say(top)}." if top else ""))
        lines.append("Next: try the change these numbers point to (placement P3/P4/P5, window size, heads, positional "
                     "encoding, initialisation) as a new config in the same study, and report that run too.")
    peers_better = [r for r in better if r["role"] == "peer"]
    if peers_better:
        lines.append("Peers beating plain beyond noise: " + "; ".join(say(r) for r in peers_better) + ".")
    if worse:
        lines.append("Worse than plain beyond noise: " + "; ".join(say(r) for r in worse) + ".")
    lines += ["", f"### Goal check: {goal['status'].upper()}", ""]
    if goal["best"] is None:
        return lines + [goal["reason"]]
    lines.append(f"Best candidate: `{goal['best']}`" + (f" ({goal['reason']})" if goal["reason"] else "") + ".")
    lines += ["", "| criterion | value | met |", "|---|---|---|"]
    lines += [f"| {c} | {v} | {s} |" for c, v, s in goal["checks"]]
    return lines
