"""Splitting a text into words for augmentation, and joining them back.

A word is a run of letters and digits, with inner apostrophes and hyphens ("don't", "well-made") or a leading
apostrophe ("'s", as in tokenized text such as SST-2); a run of other non-space characters is a punctuation
token. Only words are replaced or masked; punctuation stays. The words are joined back with single spaces, so
"Nice, isn't it?" comes back as "Nice , isn't it ?" (already-tokenized text such as SST-2 comes back unchanged).
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\w+(?:['’-]\w+)*|['’]\w+|[^\w\s]+")


def split_words(text: str) -> list[str]:
    return _TOKEN.findall(text)


def join_words(words: list[str]) -> str:
    return " ".join(words)


def is_word(token: str) -> bool:
    """True for a word (it has a letter or digit), False for punctuation."""
    return any(char.isalnum() for char in token)
