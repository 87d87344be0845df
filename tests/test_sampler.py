"""Length-bucketed batches: every item once per epoch, reshuffled from the seed, little padding."""

from __future__ import annotations

import numpy as np

from emotion.data.sampler import LengthBucketSampler, padding_fraction


def iemocap_like_lengths(n=2000, seed=0):
    """Log-normal durations, mean about 4.5 s, capped at 12 s, in samples at 16 kHz."""
    seconds = np.random.default_rng(seed).lognormal(np.log(4.5) - 0.18, 0.6, n)
    return (np.clip(seconds, 0.6, 12.0) * 16000).astype(int)


def test_every_item_once_per_epoch_in_batches_of_the_requested_size():
    lengths = iemocap_like_lengths(1003)
    sampler = LengthBucketSampler(lengths, batch_size=8, shuffle=True, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 126
    assert sorted(i for batch in batches for i in batch) == list(range(1003))
    assert sorted(len(batch) for batch in batches) == [3] + [8] * 125  # the last pool's remainder


def test_a_lone_item_joins_the_batch_before_it_in_training_but_not_in_evaluation():
    lengths = iemocap_like_lengths(17)
    training = list(LengthBucketSampler(lengths, batch_size=8, shuffle=True))
    assert len(training) == len(LengthBucketSampler(lengths, 8, shuffle=True)) == 2
    assert sorted(len(batch) for batch in training) == [8, 9]
    assert [len(batch) for batch in LengthBucketSampler(lengths, 8, shuffle=False)] == [8, 8, 1]


def test_batches_are_reshuffled_each_epoch_and_reproducible_from_the_seed():
    lengths = iemocap_like_lengths()

    def epoch_batches(seed, epoch):
        sampler = LengthBucketSampler(lengths, 8, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert epoch_batches(0, 1) == epoch_batches(0, 1)
    assert epoch_batches(0, 1) != epoch_batches(0, 2)
    assert epoch_batches(0, 1) != epoch_batches(1, 1)


def test_bucketing_cuts_padding_below_ten_percent_where_random_batches_waste_a_third():
    lengths = iemocap_like_lengths()
    bucketed = padding_fraction(list(LengthBucketSampler(lengths, 8, shuffle=True)), lengths)
    random = padding_fraction(list(LengthBucketSampler(lengths, 8, shuffle=True, pool_batches=1)), lengths)
    assert bucketed < 0.10 and random > 0.3


def test_evaluation_order_is_fixed_longest_first():
    lengths = [5, 9, 1, 7]
    assert list(LengthBucketSampler(lengths, 2, shuffle=False)) == [[1, 3], [0, 2]]


def test_padding_fraction_by_hand():
    # batches [10, 6] and [4]: padded 2·10 + 1·4 = 24 samples, of which 20 are speech.
    assert padding_fraction([[0, 1], [2]], [10, 6, 4]) == 1 - 20 / 24
