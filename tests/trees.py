"""Small corpora in the real on-disk layouts, voiced by the demo synthesiser, for tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from emotion.data.demo import SAMPLE_RATE, draw_labels, expression_of, make_voices, synthesise


def speech(seed: int, voice: int = 0) -> tuple[np.ndarray, dict[str, float]]:
    """One synthetic utterance (1–4 s at 16 kHz) and its labels on 1–5."""
    rng = np.random.default_rng([seed, voice])
    labels = draw_labels(rng)
    return synthesise(make_voices(0)[voice], expression_of(labels, rng), rng), labels


def iemocap_tree(root: Path, turns_per_speaker: int = 3) -> dict[str, dict]:
    """IEMOCAP_full_release with 5 sessions × 2 speakers × `turns_per_speaker` turns; returns {turn: labels}."""
    labels_by_turn = {}
    for session in range(1, 6):
        dialog = f"Ses{session:02d}F_impro01"
        wav_dir = root / f"Session{session}" / "sentences" / "wav" / dialog
        label_dir = root / f"Session{session}" / "dialog" / "EmoEvaluation"
        wav_dir.mkdir(parents=True)
        label_dir.mkdir(parents=True)
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for index in range(turns_per_speaker * 2):
            sex = "FM"[index % 2]
            turn = f"{dialog}_{sex}{index:03d}"
            wave, labels = speech(session * 100 + index, voice=2 * (session - 1) + index % 2)
            sf.write(wav_dir / f"{turn}.wav", wave, SAMPLE_RATE, subtype="PCM_16")
            vad = f"[{labels['valence']:.4f}, {labels['arousal']:.4f}, {labels['dominance']:.4f}]"
            lines += [
                f"[{index * 5:.4f} - {index * 5 + 3:.4f}]\t{turn}\tneu\t{vad}",
                "C-E1:\tNeutral state;\t()",
                "A-E1:\tval 3; act 2; dom  3;\t()",
                "",
            ]
            labels_by_turn[turn] = {"session": session, "speaker": f"Ses{session:02d}{sex}", **labels}
        (label_dir / f"{dialog}.txt").write_text("\n".join(lines))
        (label_dir / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07 mac resource fork")  # must be ignored
    return labels_by_turn


def msp_podcast_tree(root: Path) -> dict[str, str]:
    """Labels/labels_consensus.csv and Audios/ with every split; labels on 1–7. Returns {file: split}."""
    (root / "Audios").mkdir(parents=True)
    (root / "Labels").mkdir()
    split_sets = ["Train"] * 6 + ["Development"] * 3 + ["Test1"] * 3 + ["Test2"] * 2 + ["Test3"] * 1
    rows, split_of = [], {}
    for index, split_set in enumerate(split_sets):
        name = f"MSP-PODCAST_{index:04d}_0001.wav"
        wave, labels = speech(1000 + index, voice=index % 10)
        sf.write(root / "Audios" / name, wave, SAMPLE_RATE, subtype="PCM_16")
        act, val, dom = (1.0 + (labels[dim] - 1.0) * 1.5 for dim in ("arousal", "valence", "dominance"))
        rows.append([name, "N", f"{act:.1f}", f"{val:.1f}", f"{dom:.1f}", str(index % 5), "Female", split_set])
        split_of[name] = split_set
    with open(root / "Labels" / "labels_consensus.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"])
        writer.writerows(rows)
    return split_of


def csv_tree(root: Path, columns: list[str], n_speakers: int = 6, per_speaker: int = 2) -> Path:
    """A manifest with the given columns (from path, speaker, arousal, valence, dominance, fold, split)."""
    (root / "audio").mkdir(parents=True)
    rows = []
    for speaker in range(n_speakers):
        for index in range(per_speaker):
            wave, labels = speech(2000 + speaker * 10 + index, voice=speaker % 10)
            path = f"audio/s{speaker}_{index}.wav"
            sf.write(root / path, wave, SAMPLE_RATE, subtype="PCM_16")
            split = ("train", "train", "train", "train", "val", "test")[speaker % 6]
            values = {"path": path, "speaker": f"s{speaker}", "fold": speaker % 3 + 1, "split": split, **labels}
            rows.append({column: values[column] for column in columns})
    return write_manifest(root, rows)


def long_csv_tree(root: Path, seconds: tuple[float, ...], n_speakers: int = 6) -> Path:
    """A manifest with a fold column (3 folds of 2 speakers), each speaker saying one utterance of each of
    `seconds`."""
    (root / "audio").mkdir(parents=True)
    voices = make_voices(0)
    rows = []
    for speaker in range(n_speakers):
        for index, length in enumerate(seconds):
            rng = np.random.default_rng([3000, speaker, index])
            labels = draw_labels(rng)
            path = f"audio/s{speaker}_{index}.wav"
            wave = synthesise(voices[speaker % 10], expression_of(labels, rng), rng, seconds=length)
            sf.write(root / path, wave, SAMPLE_RATE, subtype="PCM_16")
            rows.append({"path": path, "speaker": f"s{speaker}", "fold": speaker % 3 + 1, **labels})
    return write_manifest(root, rows)


def write_manifest(root: Path, rows: list[dict]) -> Path:
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest
