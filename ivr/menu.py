"""Menu input rules, free of Flask: what one keypress (or none) means at a given attempt."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["choice", "repeat", "reprompt", "person"]


@dataclass(frozen=True)
class Decision:
    """``kind``: choice (``value`` is the option), repeat (play the menu again),
    reprompt (``reason`` no_input/invalid; ``next_attempt`` to put in the next URL),
    person (route to a person; ``reason`` why)."""

    kind: Kind
    value: str | None = None
    reason: str | None = None
    next_attempt: int = 1


def interpret(digits: str | None, options: dict[str, str], *, attempt: int, max_attempts: int,
              person_key: str | None = "0", repeat_key: str | None = "*") -> Decision:
    """Decide what to do with the caller's input on play number ``attempt`` of a menu.

    ``digits`` is the Gather result (None or "" when nothing was pressed); ``options`` maps a
    key to its value. The repeat key replays the menu and counts as a play, so the menu is
    heard at most ``max_attempts`` times whatever the caller does; after the last play with no
    valid choice the caller goes to a person. Keys other than the options (``#`` too) are invalid.
    """
    pressed = (digits or "").strip()
    if pressed and person_key and pressed == person_key:
        return Decision("person", reason="asked")
    if pressed in options:
        return Decision("choice", value=options[pressed])
    if attempt >= max_attempts:
        return Decision("person", reason="no_input" if not pressed else "invalid")
    if pressed and repeat_key and pressed == repeat_key:
        return Decision("repeat", next_attempt=attempt + 1)
    return Decision("reprompt", reason="no_input" if not pressed else "invalid",
                    next_attempt=attempt + 1)
