"""Pairwise verdicts: both orders, a disagreement is a tie, and the position figures."""

from __future__ import annotations

import pytest

from pytest_promptopt.errors import JudgeError
from pytest_promptopt.run.pairwise import (
    FIRST,
    SECOND,
    TIE,
    PairStats,
    pair_messages,
    pair_verdict,
    read_position,
)


def test_both_orders_naming_the_same_output_decide() -> None:
    assert pair_verdict(FIRST, SECOND).winner == "a"  # a first: picked A (a); b first: picked B (a)
    assert pair_verdict(SECOND, FIRST).winner == "b"
    assert not pair_verdict(FIRST, SECOND).flipped


def test_orders_that_disagree_are_a_tie_and_a_flip() -> None:
    always_first = pair_verdict(FIRST, FIRST)  # a judge that picks whatever is shown first
    assert always_first.winner == "tie" and always_first.flipped
    assert pair_verdict(FIRST, TIE).winner == "tie" and pair_verdict(FIRST, TIE).flipped
    assert pair_verdict(TIE, TIE).winner == "tie" and not pair_verdict(TIE, TIE).flipped


def test_one_order_only_takes_its_answer() -> None:
    one = pair_verdict(SECOND, None)
    assert one.winner == "b" and not one.flipped and one.positions() == (SECOND,)


@pytest.mark.parametrize(("reply", "position"), [("A", FIRST), (" b.", SECOND), ("Tie", TIE),
                                                  ("Output A is better", FIRST), ("**B**", SECOND)])
def test_replies_are_read_as_positions(reply: str, position: str) -> None:
    assert read_position(reply) == position


def test_an_unreadable_reply_is_a_judge_error() -> None:
    with pytest.raises(JudgeError, match="neither A, B nor tie"):
        read_position("Both are fine")


def test_each_order_fences_both_outputs_in_the_order_shown() -> None:
    user = pair_messages("first text", "second text", "is short")[1]["content"]
    assert user.index("first text") < user.index("second text")
    assert "OUTPUT A" in user and "OUTPUT B" in user and "CRITERIA:\nis short" in user


def test_stats_count_flips_over_pairs_in_both_orders_and_first_picks_over_picks() -> None:
    stats = PairStats()
    for a_first, b_first in ((FIRST, FIRST), (FIRST, SECOND), (TIE, SECOND), (SECOND, None)):
        stats = stats.add(pair_verdict(a_first, b_first).to_dict())
    assert (stats.pairs, stats.flips, stats.picks, stats.first_picks) == (3, 2, 6, 3)
