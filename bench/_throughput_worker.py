"""One timed training run for ``bench/train_throughput.py``, alone in its process so that peak memory is its own.

    python bench/_throughput_worker.py '<settings as JSON>'     # prints ``RESULT {json}`` as its last line

Frameworks: ``rt_packed`` / ``rt_padded`` (rt_lightning through ``lightning.Trainer``, packing on / off), ``trl``
(TRL's ``SFTTrainer`` with its default padded collator, aligned with our numerics: fp32 adapter, our precision and
checkpointing) and ``trl_shipped`` (TRL's own QLoRA defaults: bf16 adapter, bf16 autocast, gradient checkpointing).
All train the same tokens, in the same order, from the same LoRA initialisation.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time

import torch

from rt_lightning.constants import IGNORE_INDEX
from rt_lightning.data.datamodule import SFTDataModule


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def trained_tokens(labels: torch.Tensor) -> int:
    """Positions that carry loss once labels are shifted (what both frameworks average over)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


class Recorder:
    """Wall time between the ends of consecutive optimizer steps (so data loading, collation, logging and the
    optimizer all count), trained tokens and loss per step. The first step includes one-off costs."""

    def __init__(self, device: str):
        self.device, self.times, self.tokens, self.losses = device, [], [], []
        self.lora_checksum, self.rss_start_mb, self.last = None, 0.0, 0.0

    def sync(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def start(self, model):
        # Order-insensitive fingerprint of the adapter as training starts: equal only for the same LoRA init.
        self.lora_checksum = float(sum((p.detach().double() ** 2).sum() for p in model.parameters() if p.requires_grad))
        self.rss_start_mb = rss_mb()
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        self.sync()
        self.last = time.perf_counter()

    def step_end(self):
        self.sync()
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now


def datamodule(s: dict, packing: bool) -> SFTDataModule:
    return SFTDataModule(train=s["data"], val=None, layout=s["layout"], mode=s["mode"], tokenizer=s["model"],
                         max_length=s["max_length"], batch_size=s["batch_size"], max_examples=s["max_examples"],
                         packing=packing, shuffle=False, seed=s["seed"])


def run_rt_lightning(s: dict, packing: bool) -> Recorder:
    import lightning as L

    from rt_lightning.model.module import ResponseTuningModule

    rec = Recorder(s["device"])

    class Timing(L.Callback):
        def on_train_start(self, trainer, module):
            rec.start(module.model)

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            rec.tokens.append(trained_tokens(batch["labels"]))

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            rec.losses.append(float(outputs["loss"]))
            rec.step_end()

    L.seed_everything(s["seed"], verbose=False)
    module = ResponseTuningModule(
        model=s["model"], quantize=s["quantize"], dtype=s["dtype"], lora_r=s["lora_r"], lora_alpha=s["lora_alpha"],
        lora_dropout=0.0, gradient_checkpointing=s["gradient_checkpointing"], learning_rate=s["lr"],
        optimizer="adamw", attn_implementation=s["attn_implementation"])
    cuda = s["device"].startswith("cuda")
    trainer = L.Trainer(accelerator="gpu" if cuda else "cpu", devices=1, precision="bf16-mixed" if cuda else "32-true",
                        max_steps=s["steps"], gradient_clip_val=s["grad_clip"], logger=False, callbacks=[Timing()],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=datamodule(s, packing))
    return rec


def run_trl(s: dict, shipped: bool) -> Recorder:
    import datasets
    from peft import LoraConfig, get_peft_model
    from transformers import TrainerCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    from rt_lightning.hub import load_causal_lm, load_tokenizer
    from rt_lightning.model.base_guards import disable_cpu_inference_repacking

    rec = Recorder(s["device"])
    # The same token sequences: trained positions become TRL's `completion_mask`, from which it builds `labels`
    # itself (a dataset with `input_ids` is taken as tokenised: no re-tokenisation, no added BOS/EOS).
    ours = datamodule(s, packing=False).dataset("train")
    train = datasets.Dataset.from_dict({
        "input_ids": [list(e["input_ids"]) for e in ours],
        "completion_mask": [[int(t != IGNORE_INDEX) for t in e["labels"]] for e in ours]})

    # Same load, seed and LoRA as ResponseTuningModule.configure_model, so the adapter starts from the same numbers.
    set_seed(s["seed"])
    device = torch.device(s["device"])
    model = load_causal_lm(s["model"], quantize=s["quantize"], dtype=getattr(torch, s["dtype"]), attn_implementation=s[
        "attn_implementation"], device_map={"": device} if s["quantize"] else None)
    if not s["quantize"]:
        model = model.to(device)
    model.config.use_cache = False
    disable_cpu_inference_repacking(model)
    lora = LoraConfig(r=s["lora_r"], lora_alpha=s["lora_alpha"], lora_dropout=0.0, target_modules="all-linear",
                      bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    init = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    class RecordingSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            rec.tokens.append(trained_tokens(inputs["labels"]))
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            rec.losses.append(loss.detach())  # read after training: no extra sync per step
            return loss

    class Timing(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            rec.start(model)

        def on_step_end(self, args, state, control, **kwargs):
            rec.step_end()

    cuda, out = s["device"].startswith("cuda"), tempfile.TemporaryDirectory(prefix="trl-bench-")  # nothing is saved
    gc = True if shipped else s["gradient_checkpointing"]  # TRL's SFTConfig turns checkpointing on by default
    config = SFTConfig(
        output_dir=out.name, per_device_train_batch_size=s["batch_size"],
        max_steps=s["steps"], learning_rate=s["lr"], lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch", weight_decay=0.0, max_grad_norm=s["grad_clip"], max_length=s["max_length"],
        completion_only_loss=True, train_sampling_strategy="sequential", seed=s["seed"],
        bf16=True if shipped else cuda, use_cpu=not cuda, gradient_checkpointing=gc,
        gradient_checkpointing_kwargs={"use_reentrant": False} if gc else None,
        report_to="none", save_strategy="no", disable_tqdm=True, dataloader_pin_memory=cuda)
    trainer = RecordingSFTTrainer(model=model, args=config, train_dataset=train,
                                  processing_class=load_tokenizer(s["model"]), callbacks=[Timing()])
    if not shipped:
        # SFTTrainer casts a quantised model's trainable adapter to bf16 (QLoRA paper's advice); rt_lightning trains
        # it in fp32. Put the fp32 init back so both frameworks do the same arithmetic from the same start.
        for name, p in model.named_parameters():
            if name in init:
                p.data = init[name]
    if [list(x) for x in trainer.train_dataset["labels"]] != [list(e["labels"]) for e in ours]:
        raise RuntimeError("TRL's prepared labels differ from rt_lightning's: the two would not train the same tokens")
    trainer.train()
    out.cleanup()
    rec.losses = [float(x) for x in rec.losses]
    return rec


def main() -> None:
    s = json.loads(sys.argv[1])
    if s.get("threads"):
        torch.set_num_threads(s["threads"])
    framework = s["framework"]
    if framework.startswith("rt_"):
        rec = run_rt_lightning(s, packing=framework == "rt_packed")
    else:
        rec = run_trl(s, shipped=framework == "trl_shipped")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if s["device"].startswith("cuda") else None
    print("RESULT " + json.dumps({
        "framework": framework, "times": rec.times, "tokens": rec.tokens, "losses": rec.losses,
        "lora_checksum": rec.lora_checksum, "rss_at_start_mb": round(rec.rss_start_mb, 1),
        "peak_rss_mb": round(peak_rss, 1), "peak_cuda_mb": cuda_peak and round(cuda_peak, 1)}))


if __name__ == "__main__":
    main()
