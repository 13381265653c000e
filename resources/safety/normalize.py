"""Text as a guard should read it: the same for the gateway and the evaluation.

Attackers hide a phrase from literal rules with zero-width and other format characters, look-alike letters
from other scripts (Cyrillic `а` for Latin `a`), full-width forms, case and extra spaces, and hide a secret by
spacing, hyphenating, reversing or base64/hex-encoding it. `normalize` undoes the first kind (NFKC, format
characters dropped, any script transliterated to ASCII with `anyascii`, casefolded, whitespace collapsed);
`squeeze` keeps only letters and digits, and `decoded_views` adds the reversed text and what long base64 or
hex tokens in it decode to.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata

from anyascii import anyascii

_SPACE = re.compile(r"\s+")
_B64 = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}){8,}\b")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")  # zero-width and other format characters
    return _SPACE.sub(" ", anyascii(text).casefold()).strip()


def squeeze(text: str) -> str:
    """Letters and digits only, normalised: `S-K_L i v e` and `sklive` read the same."""
    return "".join(c for c in normalize(text) if c.isalnum())


def _decodes(text: str) -> list[str]:
    out = []
    for token in _B64.findall(text):
        padded = token + "=" * (-len(token) % 4)
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                raw = decode(padded)
            except (binascii.Error, ValueError):
                continue
            decoded = raw.decode("utf-8", errors="ignore")
            if decoded and sum(c.isprintable() for c in decoded) >= 0.9 * len(decoded):
                out.append(decoded)
                break
    for token in _HEX.findall(text):
        decoded = bytes.fromhex(token).decode("utf-8", errors="ignore")
        if decoded and sum(c.isprintable() for c in decoded) >= 0.9 * len(decoded):
            out.append(decoded)
    return out


def decoded_views(text: str) -> list[str]:
    """The squeezed text, reversed, and each decodable base64/hex token in it (squeezed)."""
    plain = squeeze(text)
    return [plain, plain[::-1], *(squeeze(d) for d in _decodes(text))]
