"""Split streamed reply text into sentences, for Chinese and English alike."""

from __future__ import annotations

from typing import Final

# Always end a sentence (full-width and ASCII).
HARD_BREAKS: Final = frozenset("。！？；…!?;\n")
# End a sentence only once it is long enough to be worth showing or speaking on its own.
SOFT_BREAKS: Final = frozenset("，、：,:")
SOFT_BREAK_MIN_CHARS: Final = 12
# ASCII "." ends a sentence only before whitespace (not in "3.5" or "e.g.x").
PERIOD: Final = "."
CLOSING_MARKS: Final = frozenset("\"'”’）)」』")


class SentenceSplitter:
    """Collect text deltas and hand back whole sentences as soon as they end."""

    def __init__(self) -> None:
        """Start empty."""
        self._pending = ""

    def push(self, text: str) -> list[str]:
        """Add a delta; return the sentences it completed."""
        self._pending += text
        sentences: list[str] = []
        start = 0
        i = 0
        text = self._pending
        while i < len(text):
            char = text[i]
            end: int | None = None
            long_enough = len(text[start:i].strip()) >= SOFT_BREAK_MIN_CHARS
            if char in HARD_BREAKS or (char in SOFT_BREAKS and long_enough):
                end = i + 1
            elif char == PERIOD:
                if i + 1 == len(text):
                    break  # wait: the next delta tells whether this period ends a sentence
                if text[i + 1].isspace():
                    end = i + 1
            if end is not None:
                while end < len(text) and text[end] in CLOSING_MARKS:
                    end += 1
                if sentence := text[start:end].strip():
                    sentences.append(sentence)
                start = i = end
                continue
            i += 1
        self._pending = text[start:]
        return sentences

    def flush(self) -> str | None:
        """Return what is left at the end of the text."""
        sentence = self._pending.strip()
        self._pending = ""
        return sentence or None


def split_sentences(text: str) -> list[str]:
    """Split a whole text into sentences."""
    splitter = SentenceSplitter()
    sentences = splitter.push(text)
    if (rest := splitter.flush()) is not None:
        sentences.append(rest)
    return sentences
