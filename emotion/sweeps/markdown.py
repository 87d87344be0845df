"""The small pieces of the sweep's Markdown tables."""

from __future__ import annotations

import math


def table_line(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def number(value: float, digits: int) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"
