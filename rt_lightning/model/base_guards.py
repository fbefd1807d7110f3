"""Guards on a loaded base model: bitsandbytes' CPU inference repacking switched off, and packing checked exact."""

from __future__ import annotations

import torch


def disable_cpu_inference_repacking(model: torch.nn.Module) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference during an eval-mode forward.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a ``Linear4bit`` weight the first time it runs in eval mode
    (validation, generation) and never packs it back; training then goes through ``gemv_4bit``, which has no
    autograd formula, so gradients stop flowing through the base layers without an error. Returns how many layers
    were changed.
    """
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


@torch.no_grad()
def check_packing_is_exact(model) -> None:
    """Raise unless two sequences packed in one row give the same hidden states as run separately.

    Packing relies on the model building a block-diagonal mask from restarting ``position_ids``; a model whose
    attention ignores that would silently let examples attend to each other.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(p.device for p in model.parameters())
        vocab = model.get_input_embeddings().num_embeddings
        generator = torch.Generator().manual_seed(0)
        first, second = (torch.randint(3, vocab, (1, n), generator=generator).to(device) for n in (9, 6))
        decoder = model.get_decoder()
        apart = torch.cat([decoder(input_ids=x, use_cache=False).last_hidden_state for x in (first, second)], 1)
        positions = torch.cat([torch.arange(9), torch.arange(6)])[None].to(device)
        packed = decoder(input_ids=torch.cat([first, second], 1), position_ids=positions,
                         use_cache=False).last_hidden_state
        error = (packed.float() - apart.float()).abs().max() / apart.float().abs().max().clamp_min(1e-6)
        if error > 0.02:
            raise RuntimeError(f"{type(model).__name__} with attention {model.config._attn_implementation!r} does not "
                               f"keep packed examples apart (relative error {error:.3f}); set data.init_args.packing "
                               "false, or use attn_implementation sdpa/eager/flash_attention_2")
    finally:
        model.train(was_training)
