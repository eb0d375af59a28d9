"""Several processes on one study: under ``torchrun`` or ``accelerate launch``, or alone.

Both launchers set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
reading them is all the support either needs. Each process takes every ``world_size``-th batch of
a checkpoint's missing examples (``study.grams``): rank 0 collects the eval rows (point to point)
and shares them; each rank takes its probe batches' dot products with them and sends rank 0 those
values alone. Rank 0 assembles the Gram matrix and sends it back to every rank, so each returns
the same result while only rank 0 writes files. Memory: every rank holds the eval rows and one
batch.

The backend is gloo on a CPU and nccl on GPUs, one GPU per process (``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.distributed as dist

from swiftstudy.errors import InputError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Processes:
    """This process's place among the processes of a study (one process: rank 0 of 1).

    Attributes:
        rank: This process's rank.
        world_size: How many processes share the study.
        device: Where this process computes (its own GPU under a launcher).
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Whether this process writes the files (rank 0)."""
        return self.rank == 0

    def shard(self, items: Sequence[T], rank: int | None = None) -> list[T]:
        """The items a rank (this one by default) works on: every ``world_size``-th."""
        return list(items[self.rank if rank is None else rank :: self.world_size])

    def share_ints(self, values: Sequence[int] | None) -> list[int]:
        """Rank 0's list of integers, on every rank (the other ranks' ``values`` are ignored)."""
        if self.world_size == 1:
            return list(values or [])
        length = self._broadcast(torch.tensor([len(values) if self.is_main else 0]))
        data = torch.tensor(list(values) if self.is_main else [0] * int(length[0]))
        return self._broadcast(data).tolist() if len(data) else []

    def share_tensor(
        self, tensor: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype
    ) -> torch.Tensor:
        """Rank 0's tensor of known shape and dtype, on the CPU of every rank."""
        if self.world_size == 1:
            return tensor
        if not self.is_main:
            tensor = torch.empty(shape, dtype=dtype)
        return self._broadcast(tensor.to(dtype)).cpu()

    def collect_rows(self, rows: torch.Tensor, counts: Sequence[int]) -> list[torch.Tensor]:
        """Send this rank's rows to rank 0; rank 0 gets every other rank's rows, in rank order.

        Args:
            rows: This rank's rows, ``(counts[rank], dim)`` (on the process's device).
            counts: How many rows each rank has; all ranks pass the same list.

        Returns:
            On rank 0, the rows of ranks 1, 2, ... (on the device); elsewhere an empty list.
        """
        if self.world_size == 1:
            return []
        if not self.is_main:
            if counts[self.rank]:
                dist.send(rows.to(self._comm_device).contiguous(), dst=0)
            return []
        received = []
        for rank in range(1, self.world_size):
            buffer = torch.empty(
                (counts[rank], rows.shape[1]), dtype=rows.dtype, device=self._comm_device
            )
            if counts[rank]:
                dist.recv(buffer, src=rank)
            received.append(buffer.to(rows.device))
        return received

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def _broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self._comm_device).contiguous()
        dist.broadcast(tensor, src=0)
        return tensor


@contextmanager
def start_processes(device: torch.device) -> Iterator[Processes]:
    """Join the launcher's process group (if any) for the duration of a study.

    Args:
        device: The spec's resolved device; a plain ``cuda`` becomes ``cuda:LOCAL_RANK``.

    Yields:
        This process's place; rank 0 of 1 without a launcher.

    Raises:
        InputError: ``WORLD_SIZE`` > 1 but ``RANK`` is missing or the values are not integers, or
            the device is a fixed ``cuda:N``.
    """
    world_size, rank, local_rank = _launcher_env()
    if world_size == 1:
        yield Processes(device=device)
        return
    if device.type == "cuda" and device.index is not None:
        raise InputError(
            f"{device} would put every process on one GPU; under a launcher each process takes "
            "cuda:LOCAL_RANK: set device to cuda or auto",
            key="device",
        )
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    logger.info("process %d of %d on %s", rank, world_size, device)
    try:
        yield Processes(rank=rank, world_size=world_size, device=device)
    finally:
        if created:
            dist.destroy_process_group()


def _launcher_env() -> tuple[int, int, int]:
    """``(WORLD_SIZE, RANK, LOCAL_RANK)`` from the environment; ``(1, 0, 0)`` without one."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return 1, 0, 0
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError) as err:
        found = {name: os.environ.get(name) for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
        raise InputError(
            f"a launcher's process environment is incomplete or not integers: {found}",
            key="RANK",
        ) from err
    return world_size, rank, local_rank
