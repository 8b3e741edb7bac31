"""People's names: the one rule for what a name may be (API and CLI alike), and look-alike detection.

A name is NFC-normalised and trimmed, so that the same name typed twice is the same name. Invisible
and control characters are refused, except the zero-width non-joiner and joiner where Unicode gives
them a meaning (Persian `علی‌رضا`, Indic conjuncts). Two names that look alike, by Unicode's
confusable skeletons (UTS #39, computed by ICU, of the NFKC form with whitespace runs folded), are
one person to a gallery: `Alice` with a Cyrillic `А`, `John Smith` with a non-breaking space, two
spaces or an ideographic one, or in full-width letters, cannot be registered beside `Alice`.
"""

from __future__ import annotations

import unicodedata

import icu
from idna.core import valid_contextj

MAX_NAME_LENGTH = 200
# Control, format (invisible, bidi overrides), surrogate, private-use and unassigned characters, and
# the line and paragraph separators, which would break a name across lines wherever it is shown.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_ZWNJ, _ZWJ = "\u200c", "\u200d"
# What a strict form parser puts for bytes that are not valid UTF-8 (api/forms.py); never a name.
_REPLACEMENT = "\ufffd"

_SPOOF_CHECKER = icu.SpoofChecker()


class InvalidNameError(ValueError):
    """The name cannot be used; the message says why (HTTP 422)."""


def clean_name(raw: str) -> str:
    """The name as stored: NFC-normalised and trimmed. InvalidNameError if it is unusable."""
    name = unicodedata.normalize("NFC", raw).strip()
    if _REPLACEMENT in name:
        raise InvalidNameError("name is not valid UTF-8 (or holds U+FFFD, the mark of a broken encoding)")
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise InvalidNameError(f"name must be 1 to {MAX_NAME_LENGTH} characters after trimming")
    for position, char in enumerate(name):
        if unicodedata.category(char) in _REFUSED_CATEGORIES and not _joiner_allowed(name, position):
            hint = " (a zero-width joiner only between letters that join, or after a virama)"
            raise InvalidNameError(
                f"name must not contain control or invisible characters: U+{ord(char):04X} at {position}"
                + (hint if char in (_ZWNJ, _ZWJ) else "")
            )
    return name


def _joiner_allowed(name: str, position: int) -> bool:
    """RFC 5892's CONTEXTJ rules (after a virama; ZWNJ also between joining letters), as the `idna`
    library implements them; ZWJ is let into the joining context too, where Persian writes it."""
    if name[position] not in (_ZWNJ, _ZWJ):
        return False
    try:
        as_non_joiner = name[:position] + _ZWNJ + name[position + 1 :]
        return valid_contextj(name, position) or valid_contextj(as_non_joiner, position)
    except ValueError:  # a neighbour without a Unicode name: unassigned, refused on its own anyway
        return False


def name_skeleton(name: str) -> str:
    """The UTS #39 confusable skeleton of the name's NFKC form with each run of whitespace made one
    space: names that look alike have the same one. ICU's skeleton alone keeps full-width letters
    (`Ａｍｙ`) and a run of spaces as they are, which NFKC and the folding bring to `Amy` and one space."""
    folded = " ".join(unicodedata.normalize("NFKC", name).split())
    return _SPOOF_CHECKER.getSkeleton(0, folded)
