"""Batches of utterances of similar length, so that a batch is mostly speech rather than padding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import Sampler


@dataclass(frozen=True)
class CorpusDraws:
    """How often a training epoch draws the items of each corpus (data.corpus_weights): corpus `c` gets the
    share `shares[c]` of the epoch's draws. `groups`: each index's corpus."""

    groups: np.ndarray
    shares: np.ndarray

    def indices(self, rng: np.random.Generator) -> np.ndarray:
        """As many indices as there are items, in random order: each corpus's share of them, its items
        drawn without replacement until all are used, then again (a small corpus is repeated, a large one
        sampled)."""
        counts = _largest_remainder(self.shares * len(self.groups))
        drawn = []
        for group, count in enumerate(counts):
            members = np.flatnonzero(self.groups == group)
            if count and len(members):
                rounds = -(-count // len(members))
                drawn.append(np.concatenate([rng.permutation(members) for _ in range(rounds)])[:count])
        return rng.permutation(np.concatenate(drawn)) if drawn else np.arange(0)


def _largest_remainder(quotas: np.ndarray) -> np.ndarray:
    """Whole counts that sum to round(sum(quotas)), each within one of its quota."""
    counts = np.floor(quotas).astype(int)
    short = int(round(quotas.sum())) - counts.sum()
    counts[np.argsort(counts - quotas, kind="stable")[:short]] += 1
    return counts


class LengthBucketSampler(Sampler[list[int]]):
    """Yields lists of dataset indices; every index exactly once per epoch.

    Training (`shuffle=True`): each epoch, from a generator seeded by (seed, epoch), the indices are
    shuffled, cut into pools of `pool_batches` batches, each pool is sorted by length and cut into
    batches, and the batches are shuffled. Pools keep batches different from epoch to epoch; sorting
    within a pool keeps their padding low. A lone item left at the end of a pool joins the batch before it:
    the CCC of one item is undefined and would only give the optimizer a zero gradient.
    With `draws`, an epoch's indices are drawn by corpus instead (CorpusDraws): as many, repeated or left out.
    Evaluation (`shuffle=False`): longest first, in fixed order, and no batch longer in all than
    `max_batch_samples` (padding included; a longer item goes alone), so that whole utterances, whose
    attention grows with the square of their length, fit where a training batch of crops does.
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        pool_batches: int = 32,
        max_batch_samples: int | None = None,
        draws: CorpusDraws | None = None,
    ):
        self.lengths = np.asarray(lengths)
        self.draws = draws
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool_size = batch_size * pool_batches
        self.max_batch_samples = max_batch_samples
        self.epoch = 0
        self.first_batch = 0

    def set_epoch(self, epoch: int, first_batch: int = 0) -> None:
        """The epoch's batches, from `first_batch` on: a resumed run skips those it trained on already."""
        self.epoch = epoch
        self.first_batch = first_batch

    def __len__(self) -> int:
        if not self.shuffle:
            return len(capped_batches(self.lengths, self.batch_size, self.max_batch_samples))
        return len(self._pool_batch_sizes())

    def largest_batch(self) -> int:
        """The most items a batch can hold: training may merge a lone item into the batch before it."""
        if not self.shuffle:
            return max(map(len, capped_batches(self.lengths, self.batch_size, self.max_batch_samples)))
        return max(self._pool_batch_sizes())

    def _pool_batch_sizes(self) -> list[int]:
        pools = [self.pool_size] * (len(self.lengths) // self.pool_size) + [len(self.lengths) % self.pool_size]
        return [len(batch) for size in pools if size for batch in _cut(np.arange(size), self.batch_size, True)]

    def __iter__(self):
        if not self.shuffle:
            return iter(capped_batches(self.lengths, self.batch_size, self.max_batch_samples))
        rng = np.random.default_rng([self.seed, self.epoch])
        shuffled = rng.permutation(len(self.lengths)) if self.draws is None else self.draws.indices(rng)
        batches = []
        for start in range(0, len(shuffled), self.pool_size):
            pool = shuffled[start : start + self.pool_size]
            batches += _cut(pool[np.argsort(self.lengths[pool], kind="stable")], self.batch_size, merge_lone=True)
        return iter([batches[i] for i in rng.permutation(len(batches))][self.first_batch :])


def capped_batches(lengths, batch_size: int, max_samples: int | None = None) -> list[list[int]]:
    """Indices longest first, in batches of at most `batch_size` whose padded size (items × the longest)
    stays within `max_samples`; an item longer than that goes alone."""
    lengths = np.asarray(lengths)
    batches: list[list[int]] = []
    for index in np.argsort(-lengths, kind="stable").tolist():
        batch = batches[-1] if batches else None
        # Longest first: a batch's first item is its longest.
        fits = batch is not None and len(batch) < batch_size
        if fits and max_samples is not None:
            fits = (len(batch) + 1) * lengths[batch[0]] <= max_samples
        if fits:
            batch.append(index)
        else:
            batches.append([index])
    return batches


def _cut(order: np.ndarray, batch_size: int, merge_lone: bool = False) -> list[list[int]]:
    batches = [order[start : start + batch_size].tolist() for start in range(0, len(order), batch_size)]
    if merge_lone and len(batches) > 1 and len(batches[-1]) == 1:
        lone = batches.pop()
        batches[-1] += lone
    return batches


def padding_fraction(batches: list[list[int]], lengths: list[int] | np.ndarray) -> float:
    """Share of a padded batch that is padding, over all batches: 1 - Σ lengths / Σ (batch size × longest)."""
    lengths = np.asarray(lengths)
    padded = sum(len(batch) * lengths[batch].max() for batch in batches)
    return 1.0 - sum(lengths[batch].sum() for batch in batches) / padded
