"""AdamW with a lower learning rate for a fine-tuned encoder, and a warmup + cosine schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from emotion.settings import OptimSettings

# Parameters that set time constants or mixing weights; decaying them towards zero changes the model's meaning.
NO_DECAY_SUFFIXES = ("A_log", "D", "alpha_logit", "layer_logits")


def build_optimizer(model: nn.Module, optim: OptimSettings) -> torch.optim.AdamW:
    """Four groups: (encoder | rest) × (decay | no decay). Biases and norms are not decayed either."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        in_encoder = name.startswith("encoder.wavlm.")
        decay = param.ndim >= 2 and not name.endswith(NO_DECAY_SUFFIXES)
        groups.setdefault((in_encoder, decay), []).append(param)
    return torch.optim.AdamW(
        [
            {
                "params": params,
                "lr": optim.encoder_lr if in_encoder else optim.lr,
                "weight_decay": optim.weight_decay if decay else 0.0,
            }
            for (in_encoder, decay), params in groups.items()
        ],
        betas=tuple(optim.betas),
        eps=optim.eps,
    )


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_lr_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0 over `warmup_steps`, then cosine decay to `min_lr_ratio` × the base rate."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class Optimisation:
    """What turns a loss into parameter updates: gradient accumulation and scaling, clipping, AdamW, schedule."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    grad_clip: float
    accumulation_steps: int

    @classmethod
    def build(
        cls,
        model: nn.Module,
        optim: OptimSettings,
        accumulation_steps: int,
        total_steps: int,
        scale_loss: bool,
        device_type: str,
    ) -> Optimisation:
        """`optim`: the optimizer settings; `scale_loss` for fp16, whose small gradients would underflow unscaled."""
        optimizer = build_optimizer(model, optim)
        warmup_steps = round(optim.warmup_ratio * total_steps)
        return cls(
            optimizer=optimizer,
            scheduler=warmup_cosine(optimizer, total_steps, warmup_steps, optim.min_lr_ratio),
            scaler=torch.amp.GradScaler(device_type, enabled=scale_loss),
            grad_clip=optim.grad_clip,
            accumulation_steps=accumulation_steps,
        )

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    @property
    def steps(self) -> int:
        """Optimizer steps taken so far."""
        return self.scheduler.last_epoch

    def backward(self, loss: torch.Tensor, group_size: int | None = None) -> None:
        """Accumulate `loss`'s gradient as one of `group_size` micro-batches (default: accumulation_steps) whose
        mean the next step applies. An epoch's last group may be shorter: it is averaged over its own size."""
        self.scaler.scale(loss / (group_size or self.accumulation_steps)).backward()

    def step(self, parameters) -> bool:
        """Clip and apply the accumulated gradients; False when they were not finite and nothing was changed.

        With fp16 the gradient scaler owns that decision: it skips such steps itself and lowers its scale,
        which is how it finds its range, so they do not count as faults.
        """
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(parameters, self.grad_clip)
        finite = bool(torch.isfinite(norm)) or self.scaler.is_enabled()
        if finite:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return finite

    def discard(self) -> None:
        """Drop the gradients accumulated so far (a micro-batch of the group had a non-finite loss)."""
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
