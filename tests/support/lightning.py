"""Callbacks and a strategy used by subprocess tests through YAML ``class_path``."""

import time
from contextlib import contextmanager

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import FSDPStrategy


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
    comes back holding ``exp_avg_sq``). On a GPU the offload is a real copy.
    """

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
