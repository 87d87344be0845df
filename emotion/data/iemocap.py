"""IEMOCAP (Busso et al., 2008): five sessions of two actors, dimensional labels per turn.

Labels come from `Session{k}/dialog/EmoEvaluation/<dialog>.txt`, whose turn lines read
    [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]
with the bracket holding valence, activation (arousal) and dominance, averaged over annotators on 1–5.
The lines under each turn (C-E1:, A-E2:, …) are single annotators' ratings and are not labels.
Audio is `Session{k}/sentences/wav/<dialog>/<turn>.wav`.
"""

from __future__ import annotations

import re
from pathlib import Path

from emotion.data.corpus import Item, parse_label

SESSIONS = range(1, 6)
LABEL_RANGE = (1.0, 5.0)
TURN_LINE = re.compile(r"^\[[\d.]+ - [\d.]+\]\t(?P<turn>Ses\d\d[FM]_\S+)\t\S+\t\[(?P<vad>[^\]]*)\]")
LAYOUT = (
    "IEMOCAP_full_release/Session1 … Session5, each with dialog/EmoEvaluation/*.txt and "
    "sentences/wav/<dialog>/<turn>.wav"
)


def read_iemocap(root: str | Path) -> list[Item]:
    """Every labelled turn, with fold = session and speaker = session + the speaking actor's sex."""
    root = Path(root)
    missing = [f"Session{k}" for k in SESSIONS if not (root / f"Session{k}" / "dialog" / "EmoEvaluation").is_dir()]
    if missing:
        raise FileNotFoundError(
            f"data.root={str(root)!r} is not an IEMOCAP release: no {', '.join(missing)} with dialog/EmoEvaluation. "
            f"Expected {LAYOUT}. Set data.root (or IEMOCAP_ROOT) to the IEMOCAP_full_release folder."
        )
    items = []
    for session in SESSIONS:
        session_dir = root / f"Session{session}"
        # Skip dot files: copies made on macOS carry `._*.txt` resource forks beside the real files.
        for label_file in sorted((session_dir / "dialog" / "EmoEvaluation").glob("[!.]*.txt")):
            items.extend(_turns(label_file, session_dir, session))
    return items


def _turns(label_file: Path, session_dir: Path, session: int) -> list[Item]:
    items = []
    for line in label_file.read_text(encoding="utf-8", errors="replace").splitlines():
        match = TURN_LINE.match(line)
        if not match:
            continue
        turn = match["turn"]
        valence, arousal, dominance = (parse_label(value) for value in match["vad"].split(","))
        dialog = turn.rsplit("_", 1)[0]
        items.append(
            Item(
                id=turn,
                path=session_dir / "sentences" / "wav" / dialog / f"{turn}.wav",
                speaker=f"Ses{session:02d}{turn.rsplit('_', 1)[1][0]}",
                labels=(arousal, valence, dominance),
                fold=session,
            )
        )
    return items
