"""Callbacks and a strategy used by subprocess tests through YAML ``class_path``."""

import time
from contextlib import contextmanager

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import FSDPStrategy

from rt_lightning.hub import unwrapped_name


class SleepEveryStep(Callback):
    """Slow training down so a test can kill the process mid-epoch, after a checkpoint exists."""

    def __init__(self, seconds: float = 0.2):
        self.seconds = seconds

    def on_train_batch_end(self, *args, **kwargs):
        time.sleep(self.seconds)


class CPUFSDPStrategy(FSDPStrategy):
    """Lightning's FSDP1 strategy on CPU processes (gloo), so CI can check the FSDP1 path against a single process.

    Lightning refuses ``FSDPStrategy`` itself off CUDA, and hands torch ``device_id=None`` for a CPU device, which
    torch's FSDP1 reads as "find an accelerator". torch's FSDP1 does run on CPUs given ``device_id=cpu``: this class
    supplies that, while Lightning wraps the model exactly as on a GPU. And full state dicts are gathered without
    ``offload_to_cpu``: on a CPU device that "offload" (``.cpu()``) copies nothing, so the results stay views of
    torch's gather buffers, which are then freed (weights: a segfault) or reused (optimizer states: ``exp_avg``
    comes back holding ``exp_avg_sq``). On a GPU the offload is a real copy. And Lightning's FSDP precision plugin
    hard-codes ``torch.autocast("cuda")`` for ``bf16-mixed``, a no-op for CPU tensors: here it autocasts on the CPU,
    as it would on a GPU.
    """

    def setup(self, trainer):
        plugin = self.precision_plugin
        if "mixed" in plugin.precision:
            dtype = torch.bfloat16 if plugin.precision == "bf16-mixed" else torch.float16
            plugin.forward_context = lambda: torch.autocast("cpu", dtype=dtype)
        super().setup(trainer)

    def lightning_module_state_dict(self):
        with _full_state_dicts_without_offload():
            return super().lightning_module_state_dict()

    def optimizer_state(self, optimizer):
        with _full_state_dicts_without_offload():
            return super().optimizer_state(optimizer)

    def load_checkpoint(self, checkpoint_path, *args, **kwargs):
        with _full_state_dicts_without_offload():
            return super().load_checkpoint(checkpoint_path, *args, **kwargs)

    def _setup_model(self, model):
        import torch.distributed.fsdp as fsdp

        plain = fsdp.FullyShardedDataParallel

        class OnCPU(plain):
            def __init__(self, *args, device_id=None, **kwargs):
                super().__init__(*args, device_id=torch.device("cpu") if device_id is None else device_id, **kwargs)

        fsdp.FullyShardedDataParallel = OnCPU  # Lightning imports the class from here inside _setup_model
        try:
            return super()._setup_model(model)
        finally:
            fsdp.FullyShardedDataParallel = plain


@contextmanager
def _full_state_dicts_without_offload():
    import lightning.pytorch.strategies.fsdp as lightning_fsdp
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    def context(module, world_size, rank0_only=True):
        return FSDP.state_dict_type(module, StateDictType.FULL_STATE_DICT,
                                    FullStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
                                    FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only))

    plain = lightning_fsdp._get_full_state_dict_context
    lightning_fsdp._get_full_state_dict_context = context
    try:
        yield
    finally:
        lightning_fsdp._get_full_state_dict_context = plain


class ValidateLikeNCCL(Callback):
    """Run validation (sanity check included) in the grad mode that the trainer's flags ask for, as NCCL would.

    On gloo, Lightning always validates under ``no_grad``; with NCCL, ``trainer.validate`` follows the
    ``inference_mode`` flag. This callback removes the gloo exception and lets the fit-time validation loop follow
    the same flag, so a CPU run takes the path of a GPU run whose validation runs in inference mode: the path on
    which FSDP2's first forward would create inference tensors.
    """

    def setup(self, trainer, pl_module, stage):
        import lightning.pytorch.loops.utilities as loop_utilities

        loop_utilities._distributed_is_initialized = lambda: False  # only the gloo check reads it there
        trainer.fit_loop.epoch_loop.val_loop.inference_mode = trainer.validate_loop.inference_mode

    def on_validation_start(self, trainer, pl_module):
        mode = "inference_mode" if torch.is_inference_mode_enabled() else "no_grad"
        print(f"validation grad mode: {mode}", flush=True)


class HashQuantizedBytes(Callback):
    """Write the SHA-256 of every 4-bit weight's packed bytes, gathered whole, once the strategy has sharded the model
    (fit start) and again after training, to ``out`` (JSON, rank 0). Sharding and training must leave them unchanged."""

    def __init__(self, out: str):
        self.out = out
        self.hashes: dict[str, dict[str, str]] = {}

    def _hash_all(self, trainer, pl_module) -> dict[str, str]:
        import hashlib

        import bitsandbytes as bnb
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        gathered = (FSDP.summon_full_params(trainer.strategy.model, writeback=False)
                    if isinstance(trainer.strategy, FSDPStrategy) else _nothing())
        hashes = {}
        with gathered:
            for name, module in pl_module.named_modules():
                if isinstance(module, bnb.nn.Linear4bit):
                    weight = module.weight
                    weight = weight.full_tensor() if hasattr(weight, "full_tensor") else weight
                    # A copy: numpy sharing the gathered storage would stop FSDP1 from freeing it afterwards.
                    raw = weight.detach().contiguous().view(torch.uint8).cpu().clone().numpy().tobytes()
                    hashes[unwrapped_name(name)] = hashlib.sha256(raw).hexdigest()
        return hashes

    def on_fit_start(self, trainer, pl_module):
        self.hashes["fit_start"] = self._hash_all(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        import json

        self.hashes["train_end"] = self._hash_all(trainer, pl_module)
        self.hashes["steps"] = {"global_step": str(trainer.global_step)}
        if trainer.is_global_zero:
            with open(self.out, "w") as fh:
                json.dump(self.hashes, fh, indent=1)


@contextmanager
def _nothing():
    yield


class DumpStep(Callback):
    """After optimizer step ``step``, save to ``out`` (rank 0) the adapter's gradients of that step, gathered whole
    (normalised and clipped: what the optimizer stepped with), and the rotary ``inv_freq`` buffers with their
    dtypes; at fit start, each rank's local and global size of every sharded layer parameter (``out`` + rank).
    Step 2 by default: at step 1 LoRA's A matrices have zero gradients (B starts at zero)."""

    def __init__(self, out: str, step: int = 2):
        self.out = out
        self.step = step
        self.done = False

    def on_fit_start(self, trainer, pl_module):
        import json

        from rt_lightning.model.fsdp import decoder_layers

        sizes = {}
        for index, layer in enumerate(decoder_layers(pl_module.model)):
            for name, param in layer.named_parameters():
                local = param.to_local() if hasattr(param, "to_local") else param
                sizes[f"layers.{index}.{name}"] = [local.numel(), param.numel(), str(getattr(param, "placements", ""))]
        with open(f"{self.out}.rank{trainer.global_rank}.json", "w") as fh:
            json.dump(sizes, fh)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.done or trainer.global_step != self.step:
            return
        self.done = True
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        gathered = (FSDP.summon_full_params(trainer.strategy.model, with_grads=True, writeback=False)
                    if isinstance(trainer.strategy, FSDPStrategy) else _nothing())
        with gathered:
            grads = {}
            for name, param in pl_module.named_parameters():
                if param.requires_grad:
                    grad = param.grad.full_tensor() if hasattr(param.grad, "full_tensor") else param.grad
                    grads[unwrapped_name(name)] = grad.detach().float().cpu().clone()
        buffers = {unwrapped_name(name): buffer.detach().cpu().clone() for name, buffer in pl_module.named_buffers()
                   if name.endswith("inv_freq")}
        if trainer.is_global_zero:
            torch.save({"grads": grads, "buffers": buffers}, self.out)
