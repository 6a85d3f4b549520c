"""Match a spoken menu answer to an option by keywords, ignoring case, punctuation and extra words."""
from __future__ import annotations

import unicodedata

UNRECOGNISED = "?"


def words(text: str) -> list[str]:
    """Split ``text`` into case-folded words; punctuation (any Unicode P* character) separates
    words, invisible format characters (zero-width spaces) are dropped, and Russian ё is read
    as е, as recognisers and keyword lists write either."""
    text = unicodedata.normalize("NFC", text)
    cleaned = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text
                      if unicodedata.category(ch) != "Cf")
    return cleaned.casefold().replace("ё", "е").split()


def _contains(phrase: list[str], keyword: list[str]) -> bool:
    n = len(keyword)
    return n > 0 and any(phrase[i:i + n] == keyword for i in range(len(phrase) - n + 1))


def speech_to_key(phrase: str, option_keywords: dict[str, list[str]], *,
                  person_keywords: list[str], person_key: str) -> str:
    """Return the keypad key a spoken ``phrase`` stands for.

    ``option_keywords`` maps a menu key to its keywords (each one or more words). A phrase
    containing a person keyword ("operaator", "оператор", "operator") means ``person_key``.
    Otherwise the one option whose keyword occurs in the phrase wins; none, or several
    different options, give :data:`UNRECOGNISED`, which the menu treats as invalid input.
    """
    spoken = words(phrase)
    if any(_contains(spoken, words(k)) for k in person_keywords):
        return person_key
    hits = {key for key, keywords in option_keywords.items()
            if any(_contains(spoken, words(k)) for k in keywords)}
    return hits.pop() if len(hits) == 1 else UNRECOGNISED
