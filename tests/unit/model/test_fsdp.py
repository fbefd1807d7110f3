import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from rt_lightning.model.fsdp import check_strategy, data_parallel_mesh, prepare_strategy


@pytest.fixture
def peft_model(tiny_model_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return get_peft_model(base, LoraConfig(r=4, target_modules="all-linear"))


def test_fsdp1_gets_a_wrap_policy_for_decoder_layers_and_lora_leaves(peft_model):
    strategy = FSDPStrategy()
    prepare_strategy(strategy, peft_model, gradient_checkpointing=True)
    policy = strategy.kwargs["auto_wrap_policy"]
    wrapped = {name for name, module in peft_model.named_modules()
               if module is not peft_model and policy(module=module, recurse=False, nonwrapped_numel=0)}
    layers = {name for name, m in peft_model.named_modules() if isinstance(m, LlamaDecoderLayer)}
    lora = {name for name, m in peft_model.named_modules()
            if not list(m.children()) and getattr(getattr(m, "weight", None), "requires_grad", False)}
    assert len(layers) == 2 and len(lora) == 28 and wrapped == layers | lora


def test_a_user_wrap_policy_is_kept_and_other_strategies_are_untouched(peft_model):
    strategy = FSDPStrategy(auto_wrap_policy={LlamaDecoderLayer})
    policy = strategy.kwargs["auto_wrap_policy"]
    prepare_strategy(strategy, peft_model, gradient_checkpointing=True)
    assert strategy.kwargs["auto_wrap_policy"] is policy
    ddp = DDPStrategy()
    prepare_strategy(ddp, peft_model, gradient_checkpointing=True)


def test_checkpointing_twice_and_flat_params_are_refused(peft_model):
    with pytest.raises(ValueError, match="activation checkpointing is on twice"):
        prepare_strategy(FSDPStrategy(activation_checkpointing_policy={LlamaDecoderLayer}), peft_model, True)
    prepare_strategy(FSDPStrategy(activation_checkpointing_policy={LlamaDecoderLayer}), peft_model, False)
    with pytest.raises(ValueError, match="use_orig_params"):
        check_strategy(FSDPStrategy(use_orig_params=False))
    check_strategy(FSDPStrategy())


def test_fsdp1_is_told_to_keep_buffers_in_their_own_dtype(peft_model):
    from torch.distributed.fsdp import MixedPrecision

    strategy = FSDPStrategy()
    strategy.mixed_precision = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16,
                                              buffer_dtype=torch.bfloat16)
    prepare_strategy(strategy, peft_model, gradient_checkpointing=True)
    config = strategy.mixed_precision_config
    assert config.buffer_dtype is None and config.param_dtype == torch.bfloat16


class FakeMesh:
    """Lightning's 2-D mesh, as far as data_parallel_mesh reads it."""

    mesh_dim_names = ("data_parallel", "tensor_parallel")

    def __init__(self, data_parallel, tensor_parallel):
        self.sizes = {"data_parallel": data_parallel, "tensor_parallel": tensor_parallel}

    def __getitem__(self, name):
        size = self.sizes[name]
        return type("SubMesh", (), {"size": lambda self: size, "name": name})()


def test_fsdp2_shards_over_the_data_parallel_sub_mesh_and_refuses_tensor_parallel():
    assert data_parallel_mesh(FakeMesh(4, 1)).name == "data_parallel"
    with pytest.raises(ValueError, match="tensor_parallel_size is 2"):
        data_parallel_mesh(FakeMesh(1, 2))


def test_fsdp2_shards_each_layer_over_data_parallel_under_one_root(peft_model, tokenizer):
    """Lightning's 2-D mesh handed to fully_shard as it is would mean (Replicate, Shard) placements on a
    tensor-parallel dimension of size 1: nothing sharded, every layer its own root, never resharded."""
    import tempfile

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from rt_lightning.model.fsdp import decoder_layers, shard_fsdp2

    with tempfile.NamedTemporaryFile() as store:
        dist.init_process_group("gloo", init_method=f"file://{store.name}", rank=0, world_size=1)
        try:
            mesh = init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
            shard_fsdp2(peft_model, mesh)
            peft_model(input_ids=torch.tensor([[5, 6, 7]]))  # lazy initialisation decides the root
            decoder = peft_model.get_base_model().get_decoder()
            assert decoder._get_fsdp_state()._is_root
            for layer in decoder_layers(peft_model):
                state = layer._get_fsdp_state()
                assert not state._is_root and state._fsdp_param_group.post_forward_mesh_info is not None
                for param in layer.parameters():
                    assert param.device_mesh.mesh_dim_names == ("data_parallel",)
                    assert [repr(p) for p in param.placements] == ["Shard(dim=0)"]
            assert not any(hasattr(p, "placements") for p in decoder.embed_tokens.parameters())  # replicated root
        finally:
            dist.destroy_process_group()
