"""Where a training run is: everything beyond the model and optimizer that a resumed run needs."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from emotion.training.metrics import ccc_scores


@dataclass
class Progress:
    epoch: int = 1  # the epoch in progress (or next)
    batches_done: int = 0  # batches of that epoch already trained on
    loss_sum: float = 0.0  # over those batches, per utterance
    utterances: int = 0
    speech_samples: int = 0
    padded_samples: int = 0
    seconds: float = 0.0  # spent on the epoch before the last checkpoint
    bad_steps: int = 0  # optimizer steps of the epoch skipped for a non-finite loss or gradient
    bad_in_a_row: int = 0  # across epochs: too many stop the job
    finished: bool = False  # training is over (early stop or last epoch); the test may remain
    history: list[dict] = field(default_factory=list)
    # The epoch's training predictions and labels so far (one row per utterance, normalised scale), for the
    # CCC over the epoch that shows how far training runs ahead of validation.
    predictions: list[list[float]] = field(default_factory=list)
    labels: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.start_clock()

    def start_clock(self) -> None:
        self._clock = time.perf_counter() - self.seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self._clock

    def record(self, loss: float | None, lengths: torch.Tensor, padded_length: int) -> None:
        """A batch trained on; `loss` None when it was not finite (and so not trained on)."""
        self.batches_done += 1
        self.speech_samples += int(lengths.sum())
        self.padded_samples += len(lengths) * padded_length
        if loss is not None:
            self.loss_sum += loss * len(lengths)
            self.utterances += len(lengths)

    def record_predictions(self, pred: torch.Tensor, labels: torch.Tensor) -> None:
        self.predictions += pred.detach().float().cpu().tolist()
        self.labels += labels.detach().float().cpu().tolist()

    def record_step(self, taken: bool) -> None:
        self.bad_in_a_row = 0 if taken else self.bad_in_a_row + 1
        self.bad_steps += not taken

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(1, self.utterances)

    def ccc_mean(self, dimensions: tuple[str, ...]) -> float:
        """The CCC mean over the epoch's training predictions so far (crops, dropout and masking included)."""
        if not self.predictions:
            return math.nan
        return ccc_scores(np.array(self.predictions), np.array(self.labels), dimensions)["ccc_mean"]

    @property
    def padding(self) -> float:
        return 1.0 - self.speech_samples / max(1, self.padded_samples)

    def end_epoch(self, row: dict, finished: bool) -> None:
        self.history.append(row)
        fresh = Progress(epoch=self.epoch + 1, bad_in_a_row=self.bad_in_a_row, finished=finished, history=self.history)
        self.__dict__.update(fresh.__dict__)

    def state_dict(self) -> dict:
        self.seconds = self.elapsed()
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(Progress(**state).__dict__)
