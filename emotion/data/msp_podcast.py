"""MSP-Podcast (Lotfian & Busso, 2019): podcast segments with fixed train / development / test splits.

Labels are `Labels/labels_consensus.csv` (`FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender,
Split_Set`), arousal, valence and dominance averaged over annotators on 1–7; audio is `Audios/<FileName>`.
"""

from __future__ import annotations

import csv
from pathlib import Path

from emotion.data.corpus import Item, parse_label

LABEL_RANGE = (1.0, 7.0)
TEST_SETS = ("Test1", "Test2", "Test3")
LABELS = Path("Labels") / "labels_consensus.csv"
LAYOUT = "MSP-PODCAST/Labels/labels_consensus.csv and MSP-PODCAST/Audios/<FileName>"


def read_msp_podcast(root: str | Path, test_set: str) -> list[Item]:
    """Items of Train (split train), Development (val) and `test_set` (test); the other test sets are unused."""
    root = Path(root)
    if test_set not in TEST_SETS:
        raise ValueError(f"data.test_set={test_set!r} is not one of {TEST_SETS}.")
    if not (root / LABELS).is_file():
        raise FileNotFoundError(
            f"data.root={str(root)!r} is not an MSP-Podcast release: no {LABELS}. Expected {LAYOUT}. "
            "Set data.root (or MSP_PODCAST_ROOT) to the folder holding Labels/ and Audios/."
        )
    split_of = {"Train": "train", "Development": "val", test_set: "test"}
    with open(root / LABELS, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    return [
        Item(
            id=Path(row["FileName"]).stem,
            path=root / "Audios" / row["FileName"],
            speaker=row["SpkrID"],
            labels=(parse_label(row["EmoAct"]), parse_label(row["EmoVal"]), parse_label(row["EmoDom"])),
            split=split_of.get(row["Split_Set"]),
        )
        for row in rows
    ]
