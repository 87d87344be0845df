"""Dimensional speech emotion recognition: corpora, the Mamba-EMA model, the trainer, Hydra jobs.

from emotion import load_model
model = load_model("outputs/2026-12-02/10-00-00")   # a job folder or its checkpoints/best.pt
model.predict(wave, sample_rate)                     # {"arousal": …, "valence": …, "dominance": …}
"""

from __future__ import annotations


def load_model(path, device: str = "auto", precision: str = "auto"):
    """A trained model rebuilt from its checkpoint alone (see emotion.trained.load_model). Imported on
    call, so that `import emotion` stays light for the entry points that check a config first."""
    from emotion.trained import load_model as load

    return load(path, device, precision)


__all__ = ["load_model"]
