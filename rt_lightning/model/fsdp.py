"""Multi-device set-ups that need the model's structure: FSDP2 (``fully_shard``) over the data-parallel ranks,
FSDP1's wrap policy, the layout line each strategy logs at start-up, and the combinations rt_lightning refuses at
start-up with a pointer to what works."""

from __future__ import annotations

import logging

import torch

from rt_lightning.hub import unwrap_peft
from rt_lightning.model.precision import keep_buffer_dtypes

log = logging.getLogger(__name__)


def decoder_layers(model) -> list[torch.nn.Module]:
    base = unwrap_peft(model)
    layers = getattr(base.get_decoder(), "layers", None)
    if layers is None:
        raise ValueError(f"cannot find the decoder layers of {type(base).__name__} to shard")
    return list(layers)


def data_parallel_mesh(mesh):
    """The 1-D sub-mesh to shard over. Lightning's ``ModelParallelStrategy`` hands over a 2-D mesh (data_parallel x
    tensor_parallel); ``fully_shard`` on that 2-D mesh would *replicate* over data_parallel and shard over
    tensor_parallel (size 1), i.e. shard nothing."""
    names = mesh.mesh_dim_names or ()
    if "tensor_parallel" in names and mesh["tensor_parallel"].size() > 1:
        raise ValueError(f"trainer.strategy.init_args.tensor_parallel_size is {mesh['tensor_parallel'].size()}: "
                         "rt_lightning shards with FSDP2 only (there is no tensor-parallel plan for LoRA layers); set "
                         "tensor_parallel_size 1 and data_parallel_size to the number of devices")
    return mesh["data_parallel"] if "data_parallel" in names else mesh


def shard_fsdp2(model, mesh) -> None:
    """``fully_shard`` each decoder layer over the data-parallel ranks, then the decoder as the root unit.

    The root (embeddings, final norm, LM head) stays whole on every rank, by choice: it is frozen (nothing to reduce,
    no optimizer state), and the loss reads the LM head's weight directly to compute logits only where labels are
    trained, bypassing the forward that would gather a sharded head. The decoder is still made the FSDP2 root, with
    its own weights ignored: one root means one lazy initialisation, every layer resharded after its forward (a layer
    that is its own root never is) and the next layer's all-gather prefetched. All trainable (LoRA) weights must
    live in the layers, or their gradients would not be averaged across ranks: refused otherwise.
    """
    from torch.distributed.fsdp import fully_shard

    dp_mesh = data_parallel_mesh(mesh)
    layers = decoder_layers(model)
    in_layers = {id(p) for layer in layers for p in layer.parameters()}
    outside = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in in_layers]
    if outside:
        raise ValueError(f"FSDP2 shards the decoder layers only, but {len(outside)} trainable tensors lie outside them "
                         f"(e.g. {outside[:2]}): their gradients would not be averaged across ranks. Keep LoRA on the "
                         "layers' linear modules (all-linear leaves out the LM head), or use configs/strategies/ddp.yaml")
    for layer in layers:
        fully_shard(layer, mesh=dp_mesh, reshard_after_forward=True)
    decoder = unwrap_peft(model).get_decoder()
    sharded = {id(p) for layer in layers for p in layer.parameters()}
    own = {p for p in decoder.parameters() if id(p) not in sharded}
    fully_shard(decoder, mesh=dp_mesh, ignored_params=own)


def layout_line(strategy, model) -> str:
    """One line that states the real layout of ``model`` under ``strategy``, as seen from this rank."""
    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

    ranks = strategy.world_size
    if isinstance(strategy, ModelParallelStrategy):
        layers = decoder_layers(model)
        held = sum(_local_numel(p) for layer in layers for p in layer.parameters())
        total = sum(p.numel() for layer in layers for p in layer.parameters())
        replicated = sum(p.numel() for p in model.parameters() if not hasattr(p, "to_local"))
        return (f"FSDP2: {len(layers)} decoder layers sharded over {ranks} ranks; this rank holds {held:,} of {total:,} "
                f"parameters of those layers ({held / max(total, 1):.1%}); replicated on every rank: embeddings, "
                f"final norm and LM head ({replicated:,} parameters, frozen)")
    if isinstance(strategy, FSDPStrategy):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        units = [m for m in strategy.model.modules() if isinstance(m, FSDP)]
        flats = [u._handle.flat_param for u in units if u._handle is not None]
        # Before the first forward each flat parameter already holds this rank's (padded) shard.
        held = sum(f.numel() - f._shard_numel_padded for f in flats)
        total = sum(f._unpadded_unsharded_size.numel() for f in flats)
        return (f"FSDP1 ({strategy.sharding_strategy.name}): {len(units)} units over {ranks} ranks; this rank holds "
                f"{held:,} of {total:,} parameters ({held / max(total, 1):.1%})")
    if ranks > 1:
        return f"{type(strategy).__name__}: a full copy of the model on each of {ranks} ranks; adapter gradients averaged"
    return f"{type(strategy).__name__}: one process"


def _local_numel(param) -> int:
    return param.to_local().numel() if hasattr(param, "to_local") else param.numel()


def check_strategy(strategy) -> None:
    """Refusals that need no model: raised before it is loaded."""
    from lightning.pytorch.strategies import FSDPStrategy

    if isinstance(strategy, FSDPStrategy) and not strategy.kwargs.get("use_orig_params", False):
        raise ValueError("strategy 'fsdp' needs use_orig_params: true (frozen base and LoRA weights share units); "
                         "use configs/strategies/fsdp.yaml")


def prepare_strategy(strategy, model, gradient_checkpointing: bool) -> None:
    """Before Lightning wraps the model: refuse combinations known to fail or to train silently wrong, and complete
    an FSDP1 strategy (``fsdp``) for this PEFT model.

    With no ``auto_wrap_policy`` given, FSDP1 gets PEFT's policy: one unit per decoder layer (the model's
    ``_no_split_modules``) plus one per trainable LoRA leaf. FSDP1 flattens each unit into one tensor of one dtype, so
    separate LoRA units let an fp32 adapter sit beside a bf16 or 4-bit base and keep frozen and trainable weights
    apart; ``--trainer.strategy fsdp`` then works for any model without naming its classes. FSDP1 leaves buffers in
    their own dtype (the rotary frequencies stay fp32, ``precision.py``).

    QLoRA under FSDP1 and FSDP2 is allowed because the 4-bit weights are stored in bf16
    (``loading.quantization_config``); with the default uint8 storage FSDP2 trains silently wrong (accelerate#3983).
    """
    from lightning.pytorch.strategies import FSDPStrategy

    if not isinstance(strategy, FSDPStrategy):
        return
    storage = next((p.dtype for p in model.parameters() if hasattr(p, "quant_state")), None)
    compute = getattr(strategy.mixed_precision_config, "param_dtype", None)
    if storage is not None and compute not in (None, storage):
        # FSDP1 casts every parameter to param_dtype for compute: that would reinterpret the packed 4-bit bytes.
        raise ValueError(f"QLoRA under strategy 'fsdp' needs trainer.precision bf16-true or bf16-mixed (FSDP1 would "
                         f"cast the 4-bit weights, stored as {storage}, to {compute}); or use the FSDP2 overlay")
    if gradient_checkpointing and strategy._activation_checkpointing_kwargs:
        raise ValueError("activation checkpointing is on twice: the strategy's activation_checkpointing_policy and "
                         "model.gradient_checkpointing would recompute each layer twice; drop one of them")
    keep_buffer_dtypes(strategy)
    if "auto_wrap_policy" not in strategy.kwargs:
        from peft.utils.other import fsdp_auto_wrap_policy

        strategy.kwargs["auto_wrap_policy"] = fsdp_auto_wrap_policy(model)
        log.info("FSDP1: units are the decoder layers (%s) and each LoRA leaf",
                 ", ".join(model.get_base_model()._no_split_modules or []))
