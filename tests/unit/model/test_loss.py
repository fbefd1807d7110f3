import pytest
import torch

from rt_lightning.constants import IGNORE_INDEX
from rt_lightning.model.loss import masked_lm_loss


@pytest.fixture
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


def batch(vocab):
    torch.manual_seed(1)
    ids = torch.randint(3, vocab, (3, 20))
    labels = ids.clone()
    labels[:, :7] = IGNORE_INDEX   # prompt
    labels[1, 15:] = IGNORE_INDEX  # padding
    attention = torch.ones_like(ids)
    attention[1, 15:] = 0
    return ids, labels, attention


@pytest.mark.parametrize("chunk_size", [1, 5, 1024])
def test_matches_hf_loss_and_gradients(model, chunk_size):
    ids, labels, attention = batch(model.config.vocab_size)
    reference = model(input_ids=ids, attention_mask=attention, labels=labels).loss
    reference.backward()
    ref_grad = model.model.layers[0].mlp.up_proj.weight.grad.clone()
    model.zero_grad()
    hidden = model.model(input_ids=ids, attention_mask=attention).last_hidden_state
    loss, count = masked_lm_loss(hidden, labels, model.lm_head, chunk_size=chunk_size)
    loss.backward()
    assert count == int((labels[:, 1:] != IGNORE_INDEX).sum())
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.model.layers[0].mlp.up_proj.weight.grad, ref_grad, rtol=1e-4, atol=1e-7)


def test_softcap_is_applied():
    hidden = torch.randn(1, 4, 8)
    head = torch.nn.Linear(8, 11, bias=False)
    labels = torch.tensor([[IGNORE_INDEX, 3, 4, 5]])
    capped, _ = masked_lm_loss(hidden * 100, labels, head, softcap=2.0)
    logits = torch.tanh(head(hidden * 100)[0, :-1] / 2.0) * 2.0
    torch.testing.assert_close(capped, torch.nn.functional.cross_entropy(logits, labels[0, 1:]))


def test_all_masked_batch_is_an_error():
    with pytest.raises(ValueError, match="no trainable tokens"):
        masked_lm_loss(torch.randn(1, 3, 4), torch.full((1, 3), IGNORE_INDEX), torch.nn.Linear(4, 5, bias=False))


@pytest.mark.parametrize("reduction, scale", [("mean", 1.0), ("sum", 0.37)])
def test_gradient_computed_in_forward_equals_recomputation(reduction, scale):
    """A frozen head takes the early-gradient path; a trainable one recomputes (checkpoint). Same loss; the same
    gradient bit for bit when the caller sends back the expected gradient (a mean), bf16 noise when it rescales."""
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=False).to(torch.bfloat16)
    hidden = torch.randn(2, 40, 16, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, 300, (2, 40))
    labels[:, :5] = IGNORE_INDEX

    def run(frozen: bool):
        head.weight.requires_grad_(not frozen)
        hidden.grad = None
        loss, _ = masked_lm_loss(hidden, labels, head, None, 16, reduction)
        (loss * scale).backward()
        return loss.detach(), hidden.grad.clone()

    (early, early_grad), (recomputed, recomputed_grad) = run(frozen=True), run(frozen=False)
    # The CPU early path takes exp(x - logsumexp) for autograd's exp(log_softmax): the loss may differ in the last bit.
    torch.testing.assert_close(early, recomputed, rtol=1e-6, atol=0)
    if reduction == "mean":
        assert torch.equal(early_grad, recomputed_grad)
    else:
        torch.testing.assert_close(early_grad, recomputed_grad, rtol=2e-2, atol=1e-3)


def test_cpu_loss_reuses_its_logits_buffers_and_works_under_autocast():
    """Large fresh CPU tensors are page-faulted in anew each time; the loss keeps its logits buffers instead."""
    from rt_lightning.model import loss as loss_module

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=False).to(torch.bfloat16).requires_grad_(False)
    labels = torch.randint(0, 300, (2, 40))
    hidden = torch.randn(2, 40, 16, dtype=torch.bfloat16, requires_grad=True)
    masked_lm_loss(hidden, labels, head, None, 16)[0].backward()
    buffers = {key: buffer.data_ptr() for key, buffer in loss_module._CPU_WORKSPACE.items()}
    assert len(buffers) == 2  # logits and probabilities: the CPU path ran
    reference = hidden.grad.clone()
    hidden.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = masked_lm_loss(hidden, labels, head, None, 16)
    loss.backward()
    assert {key: buffer.data_ptr() for key, buffer in loss_module._CPU_WORKSPACE.items()} == buffers
    assert torch.equal(hidden.grad, reference)


def test_cpu_loss_under_autocast_uses_autocast_dtype_like_linear_would():
    """fp32 head weights under bf16 autocast: the logits are bf16, as the autograd path's linear makes them."""
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=False).requires_grad_(False)
    labels = torch.randint(0, 300, (1, 30))
    results = []
    for frozen in (True, False):
        head.weight.requires_grad_(not frozen)
        hidden = torch.randn(1, 30, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = masked_lm_loss(hidden, labels, head, None, 8)
        loss.backward()
        results.append((loss.detach(), hidden.grad))
    (early, early_grad), (recomputed, recomputed_grad) = results
    torch.testing.assert_close(early, recomputed, rtol=1e-6, atol=0)
    torch.testing.assert_close(early_grad, recomputed_grad, rtol=1e-2, atol=1e-4)
