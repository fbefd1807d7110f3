"""``FSDP2Strategy``: Lightning's ``ModelParallelStrategy`` with data parallelism over every process by default.

Lightning's ``auto`` sizes mean data_parallel = number of nodes and tensor_parallel = devices per node: on one node
with 8 GPUs, a 1 x 8 mesh, which rt_lightning refuses (there is no tensor-parallel plan for LoRA layers). Here
``auto`` means data_parallel = all processes and tensor_parallel = 1, so ``--trainer.devices 8`` and
``--trainer.num_nodes 2`` alone shard over 8 or 16 ranks, with no mesh sizes to keep in step with them.
"""

from __future__ import annotations

from typing import Literal, Union

from lightning.pytorch.strategies import ModelParallelStrategy


class FSDP2Strategy(ModelParallelStrategy):
    def __init__(self, data_parallel_size: Union[Literal["auto"], int] = "auto",
                 tensor_parallel_size: Union[Literal["auto"], int] = 1, save_distributed_checkpoint: bool = False,
                 **kwargs):
        """
        Args:
            data_parallel_size: Ranks that shard the model; ``auto`` = all processes (devices × nodes).
            tensor_parallel_size: Must stay 1 (refused otherwise, at start-up).
            save_distributed_checkpoint: False: one gathered, adapter-only file, loadable by single-process eval and
                export; True: a folder of per-rank shards.
        """
        super().__init__(data_parallel_size=data_parallel_size, tensor_parallel_size=tensor_parallel_size,
                         save_distributed_checkpoint=save_distributed_checkpoint, **kwargs)

    def setup_environment(self) -> None:
        if self._tensor_parallel_size == "auto":
            self._tensor_parallel_size = 1
        if self._data_parallel_size == "auto":
            # world_size is known only here: devices and nodes are set on the strategy after __init__.
            self._data_parallel_size = self.num_nodes * self.num_processes // int(self._tensor_parallel_size)
        super().setup_environment()
