"""How numbers look to people, the same in the CLI and the dashboard: percentages, durations, times,
epochs, names shortened in the middle so the part that tells runs apart stays visible, and text from
files or users with its control characters escaped."""

from __future__ import annotations

import time


def pct(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage without the sign: 0.2451 -> "24.5"; None -> "-"."""
    return "-" if value is None else f"{100 * value:.{digits}f}"


def duration(seconds: float | None) -> str:
    """5s, 2m05s, 1h02m (None -> "-")."""
    if seconds is None:
        return "-"
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def now() -> float:
    """The clock of "ago" texts (snapshot tests replace it)."""
    return time.time()


def ago(timestamp: float | None) -> str:
    return "-" if timestamp is None else f"{duration(now() - timestamp)} ago"


def clock(timestamp: float | None) -> str:
    """A start time: "12-01 14:05" (local time)."""
    return "-" if timestamp is None else time.strftime("%m-%d %H:%M", time.localtime(timestamp))


def epoch_text(done: int, total: int | None) -> str:
    """Finished epochs of the target: "3/8" ("3/?" while the target is unknown)."""
    return f"{done}/{total if total is not None else '?'}"


def shorten(text: str, width: int) -> str:
    """`text` cut to `width` characters by removing its middle: the common start of a day's run
    names and the distinguishing end both stay readable."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = (width - 1) // 2
    return f"{text[:head]}…{text[len(text) - (width - 1 - head):]}"


def printable(text: str) -> str:
    """`text` with every character that is not printable (terminal escapes, newlines, tabs, bidi
    controls) written as its escape (\\x1b, \\n, \\u202e): a file's or a user's text can then never
    move the cursor, retitle or clear a terminal, or split one line into two."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
