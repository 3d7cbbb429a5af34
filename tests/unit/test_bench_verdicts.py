"""The benchmark's reading of its own table: leads are judged on gains, against the seed spread."""

from __future__ import annotations

from types import ModuleType

from bench_module import bench_quality


def runs(bq: ModuleType, contender: str, pairs: list[tuple[float, float]]) -> list:
    return [bq.RunResult("qa", contender, seed, 400, "v", before=b, after=a) for seed, (b, a) in enumerate(pairs)]


def test_a_peer_that_starts_higher_but_loses_ground_does_not_lead() -> None:
    bq = bench_quality()
    # the peer's own program scores the starting prompt higher, then its optimization loses ground
    results = runs(bq, "auto", [(0.14, 0.20), (0.14, 0.22)]) + runs(bq, "gepa", [(0.30, 0.25), (0.30, 0.26)])
    lines = bq.verdicts(bq.aggregate(results)["qa"])
    assert lines[0].startswith("Largest mean gain (held-out after less before): auto (+0.070)")
    assert lines[1] == "- vs gepa: +0.115; exceeds the spread (seed ranges do not overlap)"


def test_overlapping_gain_ranges_are_within_the_spread() -> None:
    bq = bench_quality()
    results = runs(bq, "auto", [(0.0, 0.5), (0.0, 0.3)]) + runs(bq, "mipro", [(0.0, 0.4), (0.0, 0.2)])
    lines = bq.verdicts(bq.aggregate(results)["qa"])
    assert lines[0].startswith("Largest mean gain (held-out after less before): auto")
    assert lines[1].endswith("within the spread (seed ranges overlap)")


def test_one_seed_claims_no_difference() -> None:
    bq = bench_quality()
    results = runs(bq, "auto", [(0.0, 0.5)]) + runs(bq, "gepa", [(0.0, 0.0)])
    assert "One seed only" in bq.verdicts(bq.aggregate(results)["qa"])[0]
