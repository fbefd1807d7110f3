"""The optimizer step: which AdamW, token-normalised accumulation, fp32 rotary buffers under bf16-true (1 process;
2-process versions in tests/integration/test_distributed.py)."""

import tempfile

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy, SingleDeviceStrategy

from rt_lightning.data.datamodule import SFTDataModule
from rt_lightning.model.module import ResponseTuningModule
from rt_lightning.model.optimization import build_optimizer
from tests.support.files import write_jsonl
from tests.support.lightning import DumpStep


@pytest.fixture
def one_rank_group():
    import torch.distributed as dist

    with tempfile.NamedTemporaryFile() as store:
        dist.init_process_group("gloo", init_method=f"file://{store.name}", rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


def sharded_parameter():
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (1,))
    param = torch.nn.Parameter(distribute_tensor(torch.randn(4, 4), mesh, [Shard(0)]))
    param.grad = distribute_tensor(torch.randn(4, 4), mesh, [Shard(0)])
    return param


def test_paged_adamw_cannot_step_fsdp2_parameters_so_sharded_strategies_get_torch_adamw(one_rank_group):
    bnb = pytest.importorskip("bitsandbytes")
    param = sharded_parameter()
    with pytest.raises(NotImplementedError, match="sharding strategy"):  # the failure a GPU user met at step 1
        bnb.optim.PagedAdamW32bit([param], lr=1e-3).step()
    for strategy in (ModelParallelStrategy(), FSDPStrategy()):
        optimizer = build_optimizer("paged_adamw_32bit", [param], 1e-3, 0.0, strategy, torch.device("cuda"))
        assert type(optimizer) is torch.optim.AdamW
        optimizer.step()


def test_paged_adamw_is_kept_where_it_works():
    bnb = pytest.importorskip("bitsandbytes")
    param = torch.nn.Parameter(torch.zeros(2))
    for strategy in (DDPStrategy(), SingleDeviceStrategy("cpu"), None):
        optimizer = build_optimizer("paged_adamw_32bit", [param], 1e-3, 0.0, strategy, torch.device("cuda"))
        assert isinstance(optimizer, bnb.optim.PagedAdamW32bit)
    assert type(build_optimizer("paged_adamw_32bit", [param], 1e-3, 0.0, None, torch.device("cpu"))) is \
        torch.optim.AdamW
    assert type(build_optimizer("adamw", [param], 1e-3, 0.0, DDPStrategy(), torch.device("cuda"))) is \
        torch.optim.AdamW


def first_step_gradients(tmp_path, tiny_model_dir, tokenizer, micro_batch, accumulate, **module_args):
    rows = [{"instruction": "q" * i, "response": "word " * (1 + (i * 7) % 23)} for i in range(16)]
    data = SFTDataModule(train=str(write_jsonl(tmp_path / "train.jsonl", rows)), val=None, batch_size=micro_batch,
                         global_batch_size=micro_batch * accumulate, shuffle=False, cache_dir=str(tmp_path / "cache"))
    data.connect(tokenizer)
    L.seed_everything(0)  # the same LoRA initialisation in every call
    module = ResponseTuningModule(model=tiny_model_dir, quantize=None, dtype="float32", lora_r=8, lora_dropout=0.0,
                                  **module_args)
    out = tmp_path / f"grads-{micro_batch}x{accumulate}-{module_args}.pt"
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=0.3,
                        callbacks=[DumpStep(str(out))], default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=data)
    assert trainer.accumulate_grad_batches == accumulate
    return torch.load(out)["grads"]


def test_accumulating_4_micro_batches_steps_with_the_gradient_of_one_batch_of_4(tmp_path, tiny_model_dir, tokenizer):
    """Compared at the second step (the first has zero gradients for LoRA's A matrices), clipping at 0.3 on."""
    one_batch = first_step_gradients(tmp_path, tiny_model_dir, tokenizer, micro_batch=4, accumulate=1)
    accumulated = first_step_gradients(tmp_path, tiny_model_dir, tokenizer, micro_batch=1, accumulate=4)
    assert len(one_batch) == 28 and all(g.abs().max() > 0 for g in one_batch.values())
    for name, grad in one_batch.items():
        torch.testing.assert_close(accumulated[name], grad, rtol=1e-4, atol=1e-7)
    # Positive control: the older mean of per-micro-batch means is measurably another gradient on these lengths.
    older = first_step_gradients(tmp_path, tiny_model_dir, tokenizer, micro_batch=1, accumulate=4,
                                 loss_normalization="micro_batch")
    difference = max(float((older[n] - g).abs().max() / g.abs().max().clamp_min(1e-12)) for n, g in one_batch.items()
                     if g.abs().max() > 0)
    assert difference > 1e-2


def test_rotary_frequencies_stay_fp32_under_bf16_true(tmp_path, tiny_model_dir, tokenizer):
    from transformers import AutoConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    reference = LlamaRotaryEmbedding(AutoConfig.from_pretrained(tiny_model_dir)).inv_freq
    assert reference.dtype == torch.float32 and not torch.equal(reference.bfloat16().float(), reference)
    data = SFTDataModule(train=str(write_jsonl(tmp_path / "t.jsonl", [{"instruction": "a", "response": "b c"}] * 4)),
                         val=None, batch_size=2, cache_dir=str(tmp_path / "cache"))
    data.connect(tokenizer)
    module = ResponseTuningModule(model=tiny_model_dir, quantize=None, dtype="bfloat16", lora_r=8)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=2, precision="bf16-true", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[DumpStep(str(tmp_path / "first.pt"))], default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=data)
    assert next(module.model.parameters()).dtype == torch.bfloat16  # the cast did happen
    buffers = torch.load(tmp_path / "first.pt")["buffers"]
    assert buffers
    for name, value in buffers.items():
        assert value.dtype == torch.float32, name
        torch.testing.assert_close(value, reference, rtol=0, atol=0)
