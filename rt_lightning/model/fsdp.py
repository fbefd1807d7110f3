"""Multi-device set-ups that need the model's structure: FSDP2 (``fully_shard``) per decoder layer, FSDP1's wrap
policy, and the combinations rt_lightning refuses at start-up with a pointer to what works."""

from __future__ import annotations

import logging

import torch

from rt_lightning.hub import unwrap_peft

log = logging.getLogger(__name__)


def decoder_layers(model) -> list[torch.nn.Module]:
    base = unwrap_peft(model)
    layers = getattr(base.get_decoder(), "layers", None)
    if layers is None:
        raise ValueError(f"cannot find the decoder layers of {type(base).__name__} to shard")
    return list(layers)


def shard_fsdp2(model, mesh) -> None:
    """``fully_shard`` each decoder layer; embeddings, final norm and LM head stay replicated.

    The loss calls the decoder and the LM head weight directly (to compute logits only where labels are trained),
    bypassing the root module's forward that would unshard a root FSDP unit; those frozen root weights are therefore
    kept whole on every rank. All trainable (LoRA) weights live in the sharded layers. Frozen and trainable weights
    sharing a layer unit is fine for FSDP2, which shards per parameter (FSDP1 needs ``use_orig_params=True``).
    """
    from torch.distributed.fsdp import fully_shard

    layers = decoder_layers(model)
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    log.info("FSDP2: sharded %d decoder layers over %s", len(layers), mesh)


def prepare_strategy(strategy, model, gradient_checkpointing: bool) -> None:
    """Before Lightning wraps the model: refuse combinations known to fail or to train silently wrong, and complete
    an FSDP1 strategy (``fsdp``) for this PEFT model.

    With no ``auto_wrap_policy`` given, FSDP1 gets PEFT's policy: one unit per decoder layer (the model's
    ``_no_split_modules``) plus one per trainable LoRA leaf. FSDP1 flattens each unit into one tensor of one dtype, so
    separate LoRA units let an fp32 adapter sit beside a bf16 or 4-bit base and keep frozen and trainable weights
    apart; ``--trainer.strategy fsdp`` then works for any model without naming its classes.

    QLoRA under FSDP1 and FSDP2 is allowed because the 4-bit weights are stored in bf16
    (``loading.quantization_config``); with the default uint8 storage FSDP2 trains silently wrong (accelerate#3983).
    Both are checked against a single process on CPU (tests/test_distributed.py), not yet on a GPU.
    """
    from lightning.pytorch.strategies import FSDPStrategy

    if not isinstance(strategy, FSDPStrategy):
        return
    if not strategy.kwargs.get("use_orig_params", False):
        raise ValueError("strategy 'fsdp' needs use_orig_params: true (frozen base and LoRA weights share units); "
                         "use configs/strategies/fsdp.yaml")
    storage = next((p.dtype for p in model.parameters() if hasattr(p, "quant_state")), None)
    compute = getattr(strategy.mixed_precision_config, "param_dtype", None)
    if storage is not None and compute not in (None, storage):
        # FSDP1 casts every parameter to param_dtype for compute: that would reinterpret the packed 4-bit bytes.
        raise ValueError(f"QLoRA under strategy 'fsdp' needs trainer.precision bf16-true or bf16-mixed (FSDP1 would "
                         f"cast the 4-bit weights, stored as {storage}, to {compute}); or use the FSDP2 overlay")
    if gradient_checkpointing and strategy._activation_checkpointing_kwargs:
        raise ValueError("activation checkpointing is on twice: the strategy's activation_checkpointing_policy and "
                         "model.gradient_checkpointing would recompute each layer twice; drop one of them")
    if "auto_wrap_policy" not in strategy.kwargs:
        from peft.utils.other import fsdp_auto_wrap_policy

        strategy.kwargs["auto_wrap_policy"] = fsdp_auto_wrap_policy(model)
        log.info("FSDP1: units are the decoder layers (%s) and each LoRA leaf",
                 ", ".join(model.get_base_model()._no_split_modules or []))
