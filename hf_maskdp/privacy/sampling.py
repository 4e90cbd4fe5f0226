"""Batch sampling for the two branches of MaskDP (docs/privacy.md, "One training step", steps 1 and 2).

- `PoissonBatchSampler` (private branch): every record independently with rate `q`, which is
  what the accountant assumes. It yields empty batches too (they still count as steps) and
  has its own generator, so ranks draw independently and stay in step.
- `ShuffledBatchSampler` (public branch): epoch shuffles from a *separate* generator, so the
  public batch is independent of the private one and of sensitive content.

Seeds: `make_generator(None, ...)` seeds from the OS's entropy. That is the default for a
reason: anyone who knows the seed of the noise or of the Poisson draws can subtract the noise
or learn who was sampled, and the guarantee is void. A fixed `seed` is for tests and
reproducible experiments only.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator, Sequence

import torch


def make_generator(seed: int | None, stream: str, rank: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator for one random stream (`"private"`, `"public"`, `"noise"`) of one rank.

    With a `seed`, each (stream, rank) gets its own derived seed, so streams never share draws.
    `device` puts it where its draws are used (the noise on the GPU: no host-side draw and copy).
    """
    if seed is None:
        derived = secrets.randbits(63)
    else:
        digest = hashlib.sha256(f"{seed}/{stream}/{rank}".encode()).digest()
        derived = int.from_bytes(digest[:8], "little") >> 1
    return torch.Generator(device=device).manual_seed(derived)


class PoissonBatchSampler:
    """Yields `steps` lists of indices; each index of `indices` is in a list with prob. `sample_rate`."""

    def __init__(self, indices: Sequence[int], sample_rate: float, steps: int, generator: torch.Generator):
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate={sample_rate!r} must be in (0, 1]")
        self.indices = torch.as_tensor(list(indices), dtype=torch.long)
        self.sample_rate = sample_rate
        self.steps = steps
        self.generator = generator

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            # One uniform draw per record every step, even for an empty shard: the draws never
            # depend on which records were picked before.
            # float64: float32 draws come in steps of 2^-24, which would round the rate up past q.
            picked = torch.rand(len(self.indices), generator=self.generator, dtype=torch.float64) < self.sample_rate
            yield self.indices[picked].tolist()


class ShuffledBatchSampler:
    """Yields `steps` batches of `batch_size` indices from repeated shuffles of `indices`."""

    def __init__(self, indices: Sequence[int], batch_size: int, steps: int, generator: torch.Generator):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be >= 1")
        self.indices = torch.as_tensor(list(indices), dtype=torch.long)
        self.batch_size = batch_size
        self.steps = steps
        self.generator = generator
        self._order: list[int] = []

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            if len(self.indices) == 0:
                yield []
                continue
            batch: list[int] = []
            while len(batch) < min(self.batch_size, len(self.indices)):
                if not self._order:
                    self._order = self.indices[torch.randperm(len(self.indices), generator=self.generator)].tolist()
                batch.append(self._order.pop())
            yield batch


def shard(num_records: int, rank: int, world_size: int) -> list[int]:
    """This rank's records: `rank, rank + W, ...`. Poisson sampling per shard with the same `q`
    is Poisson sampling of the whole dataset with `q`."""
    return list(range(rank, num_records, world_size))
