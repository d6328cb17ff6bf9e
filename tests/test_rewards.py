"""Reward rules: verification, format bonus, truncation, and the arithmetic step check."""

import pytest

from thr.rewards import arith_steps_valid, score_response


@pytest.mark.parametrize(
    "text, ok",
    [
        (" 7+3=10. 10-5=5. 5+5=10. \\boxed{10}", True),
        (" 7+3=11. 11-5=5. 5+5=10. \\boxed{10}", False),  # right answer through a wrong step
        (" 7+3=10. 9-5=4. \\boxed{4}", False),  # chain broken: 9 is not the previous result
        (" (4+2)*3: 4+2=6. 6*3=18. \\boxed{18}", True),
        (" \\boxed{18}", False),  # no worked step at all
    ],
)
def test_arith_steps_valid(text, ok):
    assert arith_steps_valid(text) is ok


def test_score_rules():
    good = " 2+3=5. \\boxed{5}"
    assert score_response(good, "5").reward == 1.0
    assert score_response(" 2+3=6. \\boxed{5}", "5").correct  # answer-only by default
    assert not score_response(" 2+3=6. \\boxed{5}", "5", check_steps=True).correct
    cut = score_response(good, "5", finish_reason="length")
    assert (cut.reward, cut.correct, cut.truncated) == (0.0, False, True)
    assert score_response(good, "5", finish_reason="length", truncated="verify").correct
    bonus = score_response(" \\boxed{4}", "5", format_bonus=0.1, incorrect=-1.0)
    assert bonus.reward == pytest.approx(-0.9) and bonus.has_answer and not bonus.correct
    assert score_response("no answer here", "5").has_answer is False
    with pytest.raises(ValueError, match="truncated must be"):
        score_response(good, "5", truncated="maybe")
