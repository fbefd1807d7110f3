import pytest
import torch

from rt_lightning.data.datamodule import SFTDataModule
from rt_lightning.model.module import ResponseTuningModule


def module(tiny_model_dir, **kwargs):
    m = ResponseTuningModule(model=tiny_model_dir, **{"quantize": None, "lora_r": 8, "dtype": "float32", **kwargs})
    m.configure_model()
    return m


def batch(tokenizer, small_jsonl):
    dm = SFTDataModule(train=str(small_jsonl), val=None, batch_size=4, packing=False)
    dm.connect(tokenizer)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def test_only_lora_parameters_train_and_model_is_in_train_mode(tiny_model_dir):
    m = module(tiny_model_dir)
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(sub.training for sub in m.model.modules())


def test_loss_equals_hf_loss(tiny_model_dir, tokenizer, small_jsonl):
    m = module(tiny_model_dir, lora_dropout=0.0)
    b = batch(tokenizer, small_jsonl)
    ours, count = m.loss(b)
    reference = m.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    assert count == int((b["labels"][:, 1:] != -100).sum())


def test_4bit_gradients_survive_an_eval_forward(tiny_model_dir, tokenizer, small_jsonl):
    """bitsandbytes repacks 4-bit weights for CPU inference in eval mode; training afterwards must be unchanged."""
    pytest.importorskip("bitsandbytes")
    m = module(tiny_model_dir, quantize="nf4", dtype="bfloat16", lora_dropout=0.0, gradient_checkpointing=False)
    assert any(type(x).__name__ == "Linear4bit" for x in m.model.modules())
    b = batch(tokenizer, small_jsonl)

    def grads():
        m.zero_grad()
        m.loss(b)[0].backward()
        return {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}

    m.train()
    before = grads()
    m.eval()
    with torch.no_grad():
        m.loss(b)
    m.train()
    after = grads()
    first_layer = [n for n in before if "layers.0." in n and "lora_B" in n]  # lora_A grads start at 0
    assert first_layer and all(before[n].abs().sum() > 0 for n in first_layer)
    for name in before:
        torch.testing.assert_close(after[name], before[name])


def test_adapter_only_checkpoint_roundtrip(tiny_model_dir, tmp_path):
    m = module(tiny_model_dir)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.requires_grad:
                p.add_(0.5)
    checkpoint = {"state_dict": m.state_dict()}
    m.on_save_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == m.trainable_state_keys()
    fresh = module(tiny_model_dir)
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"], strict=False)
    for (n, a), (_, b) in zip(m.named_parameters(), fresh.named_parameters()):
        torch.testing.assert_close(a, b)
    other = module(tiny_model_dir, lora_r=4, lora_target_modules=["q_proj"])
    with pytest.raises(RuntimeError, match="adapter does not match"):
        other.on_load_checkpoint(checkpoint)


def test_packed_and_padded_batches_give_the_same_loss_and_gradients(tiny_model_dir, tokenizer, tmp_path):
    from tests.support.files import write_jsonl

    rows = [{"instruction": "q" * (i + 1), "response": "word " * (3 * i + 1)} for i in range(6)]
    train = write_jsonl(tmp_path / "t.jsonl", rows)
    m = module(tiny_model_dir, lora_dropout=0.0)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)  # a non-trivial adapter, so its gradients are non-zero too
    results = []
    for packing in (False, True):
        dm = SFTDataModule(train=str(train), val=None, batch_size=6, packing=packing, mode="it")
        dm.connect(tokenizer)
        dm.setup("fit")
        batch = dm.collator()([dm.dataset("train")[i] for i in range(6)])
        m.zero_grad()
        loss, count = m.loss(batch)
        loss.backward()
        results.append((loss.detach(), count, {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}))
    (padded, n1, g1), (packed, n2, g2) = results
    assert n1 == n2
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-6)
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], rtol=1e-4, atol=1e-6)


def test_packing_that_the_model_cannot_honour_is_refused(tiny_model_dir, monkeypatch):
    import transformers.masking_utils as masking

    from rt_lightning.model.base_guards import check_packing_is_exact

    m = module(tiny_model_dir)
    check_packing_is_exact(m.base_model)
    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda position_ids: None)
    with pytest.raises(RuntimeError, match="does not keep packed examples apart"):
        check_packing_is_exact(m.base_model)


@pytest.mark.parametrize("quantize", [None, "nf4"])  # PEFT's lora.Linear and its bitsandbytes Linear4bit differ
def test_under_bf16_autocast_adapters_take_bf16_inputs_and_still_train(tiny_model_dir, tokenizer, small_jsonl,
                                                                       quantize):
    """precision bf16-mixed: PEFT's cast of each adapter input to fp32 is skipped inside the loss (autocast would
    cast it straight back), and restored after it, so generation outside autocast keeps fp32 adapter inputs."""
    if quantize:
        pytest.importorskip("bitsandbytes")
    m = module(tiny_model_dir, dtype="bfloat16", lora_dropout=0.0, gradient_checkpointing=False, quantize=quantize)
    b = batch(tokenizer, small_jsonl)
    seen = []
    lora_a = next(mod for name, mod in m.model.named_modules() if name.endswith("lora_A.default"))
    lora_a.register_forward_pre_hook(lambda _, args: seen.append(args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = m.loss(b)
    loss.backward()
    assert seen and set(seen) == {torch.bfloat16}
    grads = [p.grad for n, p in m.named_parameters() if "lora_B" in n]
    assert all(g is not None and g.dtype == torch.float32 and g.abs().sum() > 0 for g in grads)
    assert all(getattr(mod, "cast_input_dtype_enabled", True) for mod in m.model.modules())
    seen.clear()
    m.loss(b)  # no autocast: the adapter computes in fp32 as before
    assert set(seen) == {torch.float32}


def test_a_4bit_model_outside_a_trainer_is_loaded_on_the_requested_device(monkeypatch, tiny_model_dir):
    """bench/gpu_suite.py's QLoRA part and ``eval --quantize nf4 --device cuda`` loaded on the CPU before."""
    import rt_lightning.model.module as module_file

    asked = {}

    class Stop(Exception):
        pass

    def fake_load(name, **kwargs):
        asked.update(kwargs)
        raise Stop

    monkeypatch.setattr(module_file, "load_causal_lm", fake_load)
    m = ResponseTuningModule(model=tiny_model_dir, quantize="nf4")
    m.load_device = torch.device("cuda:1")
    with pytest.raises(Stop):
        m.configure_model()
    assert asked["device_map"] == {"": torch.device("cuda:1")}
    with pytest.raises(Stop):
        ResponseTuningModule(model=tiny_model_dir, quantize="nf4").configure_model()
    assert asked["device_map"] == {"": torch.device("cpu")}


def test_evaluation_stops_when_the_weights_are_not_on_the_requested_device(tiny_model_dir):
    from rt_lightning.eval.runner import on_device

    net = module(tiny_model_dir).model
    assert on_device(net, "cpu") is net
    with pytest.raises(RuntimeError, match="not on the requested device cuda"):
        on_device(net, "cuda")
