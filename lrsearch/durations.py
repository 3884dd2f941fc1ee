"""Durations as people read them: one rule for the command line and the web pages."""

from __future__ import annotations

import math


def duration_text(seconds: float) -> str:
    """Seconds, rounded up: "45 s", "3 min 05 s", "2 h 07 min"."""
    s = max(0, math.ceil(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"
