import pytest

from rt_lightning.eval.icl import STOP_STRINGS, ZERO_SHOT, IclPrompt, to_response_only
from tests.support.files import requires_shared

URIAL_LIKE = ("# Instruction\n\nBelow is a list of conversations between a human and an AI assistant (you). \n"
              "Be helpful.\n\n\n# Query:\n```\nDemo question?\n```\n\n# Answer:\n```\nDemo answer.\n```\n\n"
              "# Query:\n```\n{instruction}\n```\n\n# Answer:\n```\n")


def test_zero_shot_prompt():
    assert IclPrompt("zeroshot").prompt("Hi?") == "# Query:\n```\nHi?\n```\n\n# Answer:\n```"
    assert ZERO_SHOT.count("{instruction}") == 1


def test_response_only_drops_demo_queries_and_changes_the_preamble(tmp_path):
    urial_r = to_response_only(URIAL_LIKE)
    assert "Demo question" not in urial_r and "Demo answer." in urial_r
    assert "Below is a list of responses of AI assistant (you). \n" in urial_r
    assert urial_r.endswith("# Query:\n```\n{instruction}\n```\n\n# Answer:\n```\n")
    path = tmp_path / "urial.txt"
    path.write_text(URIAL_LIKE)
    assert IclPrompt("urial_r", str(path)).prompt("Q") == urial_r.strip().format(instruction="Q")
    assert "Demo question" in IclPrompt("urial", str(path)).prompt("Q")


def test_derived_urial_r_equals_the_papers_file():
    folder = requires_shared("response-tuning", "prompts")
    urial = (folder / "urial1kv4-4shot.txt").read_text()
    assert to_response_only(urial).strip() == (folder / "urial1kv4_r-4shot.txt").read_text().strip()
    assert IclPrompt("zeroshot", str(folder / "urial-0shot.txt")).prompt("x") == IclPrompt("zeroshot").prompt("x")


def test_clean_cuts_at_stop_strings_and_backticks():
    assert IclPrompt.clean("Paris is the capital.\n```\n\n# Query:\n```\nmore") == "Paris is the capital."
    assert all(IclPrompt.clean(f"ok```{s} tail") == "ok" for s in STOP_STRINGS)


def test_urial_needs_a_file():
    with pytest.raises(ValueError, match="needs the URIAL prompt file"):
        IclPrompt("urial")
