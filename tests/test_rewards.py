"""Reward rules: verification, format bonus, truncation, and the full check of arith solutions."""

import functools

import pytest

from thr.rl.rewards import score_response
from thr.data.tasks.arith import check_solution


@pytest.mark.parametrize(
    "text, problem, ok",
    [
        (" 7+3=10. 10-5=5. 5+5=10. \\boxed{10}", "Compute 7+3-5+5.", True),
        (" 7+3=11. 11-5=5. 5+5=10. \\boxed{10}", "Compute 7+3-5+5.", False),  # right answer, wrong step
        (" 7+3=10. 9-5=4. \\boxed{4}", "Compute 7+3-5.", False),  # chain broken: 9 is not the previous result
        (" 4+2=6. 6*3=18. \\boxed{18}", "Compute (4+2)*3.", True),
        (" 4+2=6. 6*3=18. \\boxed{18}", "Compute (4+2)*4.", False),  # not the problem's operand
        (" 4+2=6. \\boxed{18}", "Compute (4+2)*3.", False),  # a step left out, box unrelated
        (" 1+1=2. \\boxed{187}", "Compute (23+45)*3-17.", False),  # true but unrelated step
        (" \\boxed{18}", "Compute (4+2)*3.", False),  # no worked step at all
        (" 4+2=6. 6*3=18. \\boxed{18} \\boxed{18}", "Compute (4+2)*3.", False),  # two boxes
    ],
)
def test_arith_check_solution(text, problem, ok):
    assert check_solution(text, problem) is ok


def test_score_rules():
    good = " 2+3=5. \\boxed{5}"
    assert score_response(good, "5").reward == 1.0
    assert score_response(" 2+3=6. \\boxed{5}", "5").correct  # answer-only without a checker
    checker = functools.partial(check_solution, problem="Compute 2+3.")
    assert score_response(good, "5", checker=checker).correct
    assert not score_response(" 2+3=6. \\boxed{5}", "5", checker=checker).correct
    cut = score_response(good, "5", finish_reason="length")
    assert (cut.reward, cut.correct, cut.truncated) == (0.0, False, True)
    assert score_response(good, "5", finish_reason="length", truncated="verify").correct
    bonus = score_response(" \\boxed{4}", "5", format_bonus=0.1, incorrect=-1.0)
    assert bonus.reward == pytest.approx(-0.9) and bonus.has_answer and not bonus.correct
    assert score_response("no answer here", "5").has_answer is False
    with pytest.raises(ValueError, match="truncated must be"):
        score_response(good, "5", truncated="maybe")
