"""Text files people upload (a script to narrate, a document an agent answers from): their
bytes decoded the way an office's files come, and binary files told apart.

UTF-8 (a BOM allowed), UTF-16 and UTF-32 by their BOM, else cp1252 (what Windows editors
write without saying so). A file with NUL bytes, or with more control characters than
``binary_share`` of its first 64 KB, is not text: ``NotText``.
"""

import codecs
import re

_CONTROL_BYTES = re.compile(r"[\x01-\x08\x0e-\x1a\x1c-\x1f\x7f]")


class NotText(ValueError):
    """The file is binary (each caller says so in its own words)."""


def text_decoded(data: bytes, *, binary_share: float = 1 / 20) -> str:
    if data.startswith(codecs.BOM_UTF8):
        text = data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace")
    elif data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        text = data.decode("utf-32", errors="replace")
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = data.decode("utf-16", errors="replace")
    else:
        if b"\x00" in data:
            raise NotText
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("cp1252", errors="replace")
    if "\x00" in text:
        raise NotText
    sample = text[:65536]
    if sample and len(_CONTROL_BYTES.findall(sample)) > len(sample) * binary_share:
        raise NotText
    return text
