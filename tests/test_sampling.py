"""Private Poisson batches and independent public batches."""

import torch

from hf_maskdp.privacy.sampling import PoissonBatchSampler, ShuffledBatchSampler, make_generator, shard


def test_poisson_batches_have_rate_q_and_include_empty_ones():
    q, n, steps = 0.05, 40, 2000
    batches = list(PoissonBatchSampler(range(n), q, steps, make_generator(0, "private")))
    assert len(batches) == steps
    sizes = torch.tensor([len(b) for b in batches], dtype=torch.float64)
    assert abs(sizes.mean().item() - q * n) < 0.1  # mean 2, std of the mean ~0.03
    assert (sizes == 0).any()  # P(empty) = 0.95^40 ~ 13 %: yielded, not skipped
    counts = torch.bincount(torch.tensor([i for b in batches for i in b]), minlength=n).double()
    assert (counts / steps - q).abs().max() < 0.025  # each record independently at rate q


def test_streams_and_ranks_draw_independently_and_seeds_reproduce():
    draws = lambda seed, stream, rank: torch.rand(8, generator=make_generator(seed, stream, rank))  # noqa: E731
    assert torch.equal(draws(3, "private", 0), draws(3, "private", 0))
    assert not torch.equal(draws(3, "private", 0), draws(3, "public", 0))
    assert not torch.equal(draws(3, "private", 0), draws(3, "private", 1))
    assert not torch.equal(draws(None, "noise", 0), draws(None, "noise", 0))  # OS entropy by default


def test_public_shuffles_cover_every_record_each_pass():
    sampler = ShuffledBatchSampler(range(10), 5, 4, make_generator(0, "public"))
    batches = list(sampler)
    assert sorted(batches[0] + batches[1]) == list(range(10))
    assert sorted(batches[2] + batches[3]) == list(range(10))
    assert list(ShuffledBatchSampler([], 5, 2, make_generator(0, "public"))) == [[], []]


def test_shards_partition_the_records():
    parts = [shard(11, r, 3) for r in range(3)]
    assert sorted(i for p in parts for i in p) == list(range(11))
