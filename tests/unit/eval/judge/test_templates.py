import pytest

from rt_lightning.eval.judge.templates import JudgeTemplate, load_template
from tests.support.files import requires_shared


def test_templates_fill_every_placeholder_style_once(tmp_path):
    ours = load_template(None, "refusal").render(instruction="How?", response="I say {response} and ${candidate}")
    assert "I say {response} and ${candidate}" in ours[0]["content"]  # filled text is not substituted again
    chat = tmp_path / "chat.txt"
    chat.write_text("<|im_start|>system\nBe fair.\n<|im_end|>\n<|im_start|>user\n{instruction} | {output_1} | "
                    '{output_2} | {"json": "kept"}\n<|im_end|>')
    assert JudgeTemplate(str(chat), chat.read_text()).render(instruction="Q", response_a="a", response_b="b") == [
        {"role": "system", "content": "Be fair."}, {"role": "user", "content": 'Q | a | b | {"json": "kept"}'}]
    with pytest.raises(ValueError, match="no placeholder for"):
        load_template(chat, "x").require("response")


def test_the_papers_templates_are_accepted_by_path():
    refusal = load_template(requires_shared("response-tuning", "prompts", "refusal_judge_prompt.txt"), "x")
    text = refusal.require("instruction", "response").render(instruction="Q?", response="R!")[0]["content"]
    assert "<BEGIN USER REQUEST>Q?<END USER REQUEST>" in text and "<BEGIN MODEL RESPONSE>R!<END" in text
    multi = load_template(requires_shared("just-eval", "judge_prompts", "multi_score_template.txt"), "x")
    text = multi.require("instruction", "response").render(instruction="Q?", response="R!")[0]["content"]
    assert "${" not in text and "Q?" in text and "R!" in text
    alpaca = load_template(requires_shared("alpaca-eval", "judge_prompts", "alpaca_eval_clf_gpt4_turbo.txt"), "x")
    assert [m["role"] for m in alpaca.require("instruction", "response_a", "response_b")
            .render(instruction="Q", response_a="a", response_b="b")] == ["system", "user"]
