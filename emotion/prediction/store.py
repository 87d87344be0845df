"""The work of an unfinished prediction, kept so that predict.resume=true continues it."""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from emotion.files import write_atomically
from emotion.prediction.inputs import InputError

log = logging.getLogger(__name__)


class PartialStore:
    """Blocks of segment outputs of an unfinished run, and the speech found in its files so far, under
    `root`, with the settings that made them."""

    def __init__(self, root: Path, settings: dict):
        self.root, self.settings = root, settings
        self.blocks: dict[str, list[dict]] = {}
        # input file index → its speech spans [start_s, end_s], or why it could not be decoded
        self.speech: dict[int, list[list[float]] | str] = {}

    def clear(self) -> None:
        """Start over: an earlier run's unfinished work is removed."""
        if self.root.exists():
            log.info("removing %s, the unfinished work of an earlier run (predict.resume=true continues it)", self.root)
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.blocks, self.speech = {}, {}

    def open(self) -> None:
        """Read what an interrupted run saved; a run with other settings is refused."""
        settings_file = self.root / "settings.json"
        if not settings_file.is_file():
            log.info("predict.resume=true: no unfinished run in %s; starting from the beginning", self.root)
            return
        saved = json.loads(settings_file.read_text())
        if saved != self.settings:
            changed = sorted(key for key in {**saved, **self.settings} if saved.get(key) != self.settings.get(key))
            raise InputError(
                f"predict.resume=true, but {self.root} was written with other {', '.join(changed)} "
                "(checkpoints, the input's files or their speakers, or segment, windows and embeddings settings); "
                "run without predict.resume=true to start over"
            )
        for block in sorted(self.root.glob("*.npz")):
            with np.load(block) as data:
                kind = block.name.rsplit("-", 1)[0]
                self.blocks.setdefault(kind, []).append({name: data[name] for name in data.files})
        speech_file = self.root / "speech.json"
        if speech_file.is_file():
            self.speech = {int(index): spans for index, spans in json.loads(speech_file.read_text()).items()}
        log.info(
            "predict.resume=true: %d blocks and the speech of %d files done in %s",
            sum(map(len, self.blocks.values())),
            len(self.speech),
            self.root,
        )

    def done(self, kind: str) -> set[int]:
        return {int(i) for block in self.blocks.get(kind, []) for i in block["indices"]}

    def save(self, kind: str, indices: list[int], predictions: np.ndarray, embeddings: np.ndarray | None) -> None:
        block = {"indices": np.asarray(indices), "predictions": predictions}
        if embeddings is not None:
            block["embeddings"] = embeddings
        buffer = io.BytesIO()
        np.savez(buffer, **block)
        self._write(f"{kind}-{len(self.blocks.get(kind, [])):06d}.npz", buffer.getvalue())
        self.blocks.setdefault(kind, []).append(block)

    def save_speech(self, index: int, spans: list[list[float]] | str) -> None:
        """One more file's speech spans (or why it could not be decoded): a resumed run does not look for
        speech in it again."""
        self.speech[index] = spans
        self._write("speech.json", json.dumps(self.speech))

    def _write(self, name: str, data: bytes | str) -> None:
        settings_file = self.root / "settings.json"
        if not settings_file.is_file():  # with the first piece of work
            self.root.mkdir(parents=True, exist_ok=True)
            write_atomically(settings_file, json.dumps(self.settings, indent=2))
        write_atomically(self.root / name, data)

    def assemble(self, kind: str, n_segments: int, embeddings: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Every segment's outputs, in segment order."""
        blocks = self.blocks.get(kind, [])
        predictions = np.zeros((n_segments, *blocks[0]["predictions"].shape[1:]))
        vectors = np.zeros((n_segments, blocks[0]["embeddings"].shape[1]), np.float32) if embeddings else None
        for block in blocks:
            predictions[block["indices"]] = block["predictions"]
            if embeddings:
                vectors[block["indices"]] = block["embeddings"]
        return predictions, vectors
