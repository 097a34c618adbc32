"""What the screens share about being redrawn from the data the app holds."""

from __future__ import annotations

import functools
from collections.abc import Callable

from textual.css.query import NoMatches
from textual.screen import Screen


def while_shown(method: Callable[[Screen], None]) -> Callable[[Screen], None]:
    """A screen's `data_changed`, run only while its widgets exist: not before it is composed, and
    not once they are removed (the app closing removes them, while `is_mounted` stays true and a
    timer or a message still calls it)."""
    @functools.wraps(method)
    def redraw(screen: Screen) -> None:
        if not screen.is_mounted:
            return
        try:
            method(screen)
        except NoMatches:
            pass
    return redraw
