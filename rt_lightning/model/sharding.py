"""Multi-device set-ups that need the model's structure: FSDP2 (``fully_shard``) per decoder layer, and the
combinations rt_lightning refuses at start-up with a pointer to what works."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def decoder_layers(model) -> list[torch.nn.Module]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
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


def check_strategy(strategy) -> None:
    """Refuse, at start-up, combinations known to fail or to train silently wrong.

    QLoRA under FSDP2 is allowed because the 4-bit weights are stored in bf16 (``loading.quantization_config``);
    with the default uint8 storage FSDP2 trains silently wrong (accelerate#3983). Verified against a single process
    on CPU (tests/test_distributed.py), not yet on a GPU.
    """
    name = type(strategy).__name__
    if name == "FSDPStrategy" and not strategy.kwargs.get("use_orig_params", False):
        raise ValueError("strategy 'fsdp' needs use_orig_params: true (frozen base and LoRA weights share units); "
                         "use configs/strategies/fsdp.yaml")
