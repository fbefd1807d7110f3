"""Negative log-likelihood of reference responses given their instructions: a judge-free helpfulness signal.

The (instruction, reference) pair is rendered in the IT format with the same template, tokenisation and masked
loss as training, so the number means "how likely is this answer after this prompt" for IT and RT models alike.
"""

from __future__ import annotations

from typing import Sequence

import torch

from rt_lightning.constants import IGNORE_INDEX
from rt_lightning.data.collate import PadCollator
from rt_lightning.data.modes import instruction_tuning
from rt_lightning.data.records import Record
from rt_lightning.data.templates import Template
from rt_lightning.data.tokenize import tokenize_batch, tokenizer_adds_bos
from rt_lightning.hub import pad_token_id, unwrap_peft
from rt_lightning.model.loss import masked_lm_loss


@torch.inference_mode()
def reference_nll(model, tokenizer, template: Template, pairs: Sequence[tuple[str, str]], max_length: int = 2048,
                  batch_size: int = 8) -> list[tuple[float, int]]:
    """Per pair: (summed NLL of the reference tokens, number of those tokens). ``model`` is an HF causal LM."""
    was_training = model.training
    model.eval()
    rendered = [template.render(instruction_tuning(Record(i, r))) for i, r in pairs]
    examples = tokenize_batch(tokenizer, rendered, tokenizer_adds_bos(tokenizer))
    collate = PadCollator(pad_token_id(tokenizer))
    base = unwrap_peft(model)
    device = next(p.device for p in model.parameters())
    softcap = getattr(base.config, "final_logit_softcapping", None)
    results = []
    try:
        for start in range(0, len(examples), batch_size):
            chunk = [{"input_ids": e.input_ids[:max_length], "labels": e.labels[:max_length]}
                     for e in examples[start:start + batch_size]]
            batch = {k: v.to(device) for k, v in collate(chunk).items()}
            hidden = base.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                        use_cache=False).last_hidden_state
            for row in range(hidden.shape[0]):
                labels = batch["labels"][row:row + 1]
                if (labels[:, 1:] != IGNORE_INDEX).any():
                    mean, count = masked_lm_loss(hidden[row:row + 1], labels, base.get_output_embeddings(), softcap)
                    results.append((float(mean) * count, count))
                else:  # the reference lies entirely past max_length
                    results.append((float("nan"), 0))
    finally:
        model.train(was_training)
    return results
