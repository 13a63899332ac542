"""The accuracy study's verdict (yolo_attn.bench.verdict): "beyond noise" is more than two standard errors of the
difference of two means, with the standard errors and means computed here by hand, on configs placed on purpose
between one and two standard errors, just past two, and with unequal numbers of runs.
"""

from __future__ import annotations

import math

import pytest

from yolo_attn.bench.verdict import A2C2F_PEER, goal_check, summarize

PLAIN = "yolov5n"
VALUES = {
    PLAIN: [0.30, 0.32, 0.34],
    "between": [0.31, 0.35, 0.39],  # +5 points: more than 1 SE, less than 2 SE above plain
    "beyond": [0.36, 0.37, 0.38],  # +7 points: more than 2 SE
    "two-runs": [0.20, 0.24],  # -10 points from 2 runs: unequal run counts
    A2C2F_PEER: [0.35, 0.36, 0.37],
}
ROLES = {PLAIN: "plain", A2C2F_PEER: "peer"}
COSTS = {name: {"latency_ms": 40.0 if name == PLAIN else 45.0} for name in VALUES}


def _mean(xs):
    return sum(xs) / len(xs)


def _sample_var(xs):
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def _se(a, b):
    """Standard error of the difference of the means of samples ``a`` and ``b``."""
    return math.sqrt(_sample_var(a) / len(a) + _sample_var(b) / len(b))


@pytest.fixture
def summary():
    rows = [{"config": c, "seed": s, "map50_95": m, "map50": m + 0.2} for c, ms in VALUES.items()
            for s, m in enumerate(ms)]
    return {r["config"]: r for r in summarize(rows, ROLES, COSTS)}


def test_difference_beyond_noise_means_more_than_two_standard_errors(summary):
    plain = VALUES[PLAIN]
    bands = {}
    for name, values in VALUES.items():
        row = summary[name]
        assert row["runs"] == len(values) and row["map50_95_mean"] == pytest.approx(_mean(values))
        assert row["map50_95_std"] == pytest.approx(math.sqrt(_sample_var(values)))
        if name == PLAIN:
            assert row["d_map50_95"] is None and row["beyond_noise"] is None
            continue
        d, se = _mean(values) - _mean(plain), _se(values, plain)
        assert row["d_map50_95"] == pytest.approx(d) and row["two_se"] == pytest.approx(2 * se)
        assert row["beyond_noise"] is (abs(d) > 2 * se)
        bands[name] = abs(d) / se
    assert 1 < bands["between"] < 2 and bands["beyond"] > 2 and bands["two-runs"] > 2  # the cases are what they claim
    assert summary["between"]["beyond_noise"] is False and summary["beyond"]["beyond_noise"] is True


def test_goal_requires_the_gain_and_the_peer_margin_beyond_two_standard_errors(summary):
    plain, peer = summary[PLAIN], summary[A2C2F_PEER]
    for name, gain_beyond, peer_beyond in (("between", "no", "no"), ("beyond", "yes", "no")):
        goal = goal_check([plain, summary[name], peer])
        checks = {criterion: met for criterion, _, met in goal["checks"]}
        assert goal["best"] == name and checks["gain over plain >= 1.0 mAP50-95 point"] == "yes"
        assert checks["gain larger than 2 standard errors"] == gain_beyond
        assert checks["CPU latency <= 1.25x plain"] == "yes"
        dp, se = _mean(VALUES[name]) - _mean(VALUES[A2C2F_PEER]), _se(VALUES[name], VALUES[A2C2F_PEER])
        assert (dp > 2 * se) is (peer_beyond == "yes")
        assert checks["beats the A2C2f peer (beyond 2SE) at equal or lower latency"] == peer_beyond
        assert goal["status"] == "not met"
    clear = dict(summary["beyond"], map50_95_mean=peer["map50_95_mean"] + 3 * _se(VALUES["beyond"], VALUES[A2C2F_PEER]))
    clear["d_map50_95"] = clear["map50_95_mean"] - plain["map50_95_mean"]
    assert goal_check([plain, clear, peer])["status"] == "met"  # 3 SE above the peer, beyond plain: met
