"""How Chorus shows values: human labels, dates, durations, counts, languages — from one place.

Registered as a template *builtin* (``TEMPLATES[...]["OPTIONS"]["builtins"]``), so every
template can write ``{{ code|label }}``, ``{{ when|when }}``, ``{{ seconds|duration }}``,
``{{ n|count:"character" }}`` and ``{{ code|language }}`` without ``{% load %}``. Python code
(forms, services that word a message) calls the plain functions below. Conventions:
``docs/conventions.md``.
"""

from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django import template
from django.conf.locale import LANG_INFO
from django.utils import dateformat, timezone

register = template.Library()

# Codes that reach a page, by what they stand for. A code with no entry is shown as words
# ("use_case" → "Use case"); add an entry where that reads wrong.
LABELS: dict[str, str] = {
    # capabilities (billing.rates.CAPABILITIES and engine capability codes)
    "tts": "Text to speech",
    "tts_stream": "Text to speech (streamed)",
    "stt": "Transcription",
    "stt_realtime": "Live transcription",
    "sts": "Voice changer",
    "voice_design": "Voice design",
    "voice_clone": "Voice cloning",
    "voice_changer": "Voice changer",
    "sound_effect": "Sound effects",
    "music": "Music",
    "dubbing": "Dubbing",
    "audio_isolation": "Audio isolation",
    "forced_alignment": "Forced alignment",
    # sources of a call
    "ui": "Studio",
    "api": "API",
    "job": "Job",
    # voice labels
    "middle_aged": "Middle-aged",
    "young": "Young",
    "old": "Old",
    "use_case": "Use case",
    "descriptive": "Description",
    "premade": "Premade",
    "cloned": "Cloned",
    "generated": "Designed",
    "professional": "Professional clone",
    # voice design models
    "eleven_multilingual_ttv_v2": "Multilingual v2 (voice design)",
    "eleven_ttv_v3": "Eleven v3 (voice design)",
    # engines
    "local": "Local (offline)",
    "elevenlabs": "ElevenLabs",
    # voice settings
    "stability": "Stability",
    "similarity_boost": "Similarity",
    "style": "Style exaggeration",
    "use_speaker_boost": "Speaker boost",
    "speed": "Speed",
    # units (singular)
    "character": "character",
    "second": "second",
    "minute": "minute",
    "hour": "hour",
    "generation": "generation",
    # text-to-speech models (ElevenLabs ids; the local engine stands in for each)
    "eleven_v3": "Eleven v3",
    "eleven_multilingual_v2": "Eleven Multilingual v2",
    "eleven_flash_v2_5": "Eleven Flash v2.5",
    "eleven_flash_v2": "Eleven Flash v2",
    "eleven_turbo_v2_5": "Eleven Turbo v2.5",
    "eleven_turbo_v2": "Eleven Turbo v2",
    "eleven_multilingual_v1": "Eleven Multilingual v1",
    "eleven_monolingual_v1": "Eleven English v1",
}

# Plural forms where adding "s" is wrong.
PLURALS: dict[str, str] = {"entry": "entries", "person": "people", "is": "are", "was": "were"}


def label_of(code) -> str:
    """The words for a code: ``"stt_realtime"`` → ``"Live transcription"``."""
    if code is None:
        return ""
    text = str(code)
    if text in LABELS:
        return LABELS[text]
    words = text.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:]


def plural_of(word: str, amount) -> str:
    """``word`` as it reads beside ``amount`` (1 character, 2 characters, 1.5 minutes)."""
    try:
        one = Decimal(str(amount)) == 1
    except ArithmeticError:
        one = False
    if one:
        return word
    if word in PLURALS:
        return PLURALS[word]
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def number_of(amount) -> str:
    """A number as people write it: thousands grouped, no trailing zeros (1,250 · 1.5)."""
    if amount is None or amount == "":
        return "0"
    value = Decimal(str(amount))
    if value == value.to_integral_value():
        return f"{int(value):,}"
    text = f"{value.normalize():,f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def count_of(amount, word: str) -> str:
    """``count_of(25, "character")`` → ``"25 characters"``; ``(1, "credit")`` → ``"1 credit"``."""
    return f"{number_of(amount)} {plural_of(LABELS.get(str(word), str(word)), amount)}"


def duration_of(value) -> str:
    """Seconds (number or timedelta) as a clock: ``3.88`` → ``"0:04"``, ``3725`` → ``"1:02:05"``.

    One format on every page, rounded to the second (half up); empty for no value.
    """
    if value is None or value == "":
        return ""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    whole = int(Decimal(str(max(seconds, 0))).quantize(Decimal(1), ROUND_HALF_UP))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def when_of(value, *, with_time: bool = True) -> str:
    """A moment in the member's time zone (the active one), one format everywhere:
    ``"7 Dec 2026, 14:05"`` (``"7 Dec 2026"`` for a date)."""
    if value in (None, ""):
        return ""
    if isinstance(value, datetime):
        if timezone.is_aware(value):
            value = timezone.localtime(value)
        return dateformat.format(value, "j M Y, H:i" if with_time else "j M Y")
    if isinstance(value, date):
        return dateformat.format(value, "j M Y")
    return str(value)


# Languages Django's LANG_INFO lacks, and the ISO 639-3 codes engines answer with ("eng").
LANGUAGE_NAMES: dict[str, str] = {
    "zh": "Chinese", "zho": "Chinese", "cmn": "Mandarin Chinese", "yue": "Cantonese",
    "fil": "Filipino", "tl": "Tagalog", "fa": "Persian",
    "eng": "English", "deu": "German", "ger": "German", "fra": "French", "fre": "French",
    "spa": "Spanish", "ita": "Italian", "por": "Portuguese", "nld": "Dutch", "dut": "Dutch",
    "pol": "Polish", "rus": "Russian", "ukr": "Ukrainian", "jpn": "Japanese", "kor": "Korean",
    "ara": "Arabic", "hin": "Hindi", "tur": "Turkish", "swe": "Swedish", "dan": "Danish",
    "nor": "Norwegian", "fin": "Finnish", "ces": "Czech", "ell": "Greek", "heb": "Hebrew",
    "hun": "Hungarian", "ron": "Romanian", "slk": "Slovak", "bul": "Bulgarian",
    "hrv": "Croatian", "srp": "Serbian", "ind": "Indonesian", "msa": "Malay",
    "vie": "Vietnamese", "tha": "Thai", "tam": "Tamil", "tel": "Telugu", "ben": "Bengali",
    "urd": "Urdu", "fas": "Persian", "cat": "Catalan", "glg": "Galician", "eus": "Basque",
    "cym": "Welsh", "gle": "Irish", "isl": "Icelandic", "est": "Estonian", "lav": "Latvian",
    "lit": "Lithuanian", "slv": "Slovenian", "afr": "Afrikaans", "swa": "Swahili",
}  # fmt: skip


def language_of(code) -> str:
    """A language code as its English name (``"en"`` → ``"English"``, ``"pt-br"`` →
    ``"Brazilian Portuguese"``); an unknown code is shown as it is, upper-cased."""
    if not code:
        return ""
    text = str(code).strip()
    key = text.lower().replace("_", "-")
    for candidate in (key, key.split("-")[0]):
        if candidate in LANGUAGE_NAMES:
            return LANGUAGE_NAMES[candidate]
        info = LANG_INFO.get(candidate)
        if info and "name" in info:
            return info["name"]
    return text.upper()


def percent_of(fraction) -> str:
    """A fraction as a whole percentage: ``0.974`` → ``"97%"`` (empty for no value)."""
    if fraction in (None, ""):
        return ""
    value = Decimal(str(fraction)) * 100
    return f"{int(value.quantize(Decimal(1), ROUND_HALF_UP))}%"


register.filter("label", label_of)
register.filter("percent", percent_of)
register.filter("duration", duration_of)
register.filter("language", language_of)
register.filter("number", number_of)


@register.filter("count")
def count_filter(amount, word):
    return count_of(amount, word)


@register.filter("plural")
def plural_filter(word, amount):
    return plural_of(word, amount)


@register.filter("when")
def when_filter(value, arg=""):
    return when_of(value, with_time=arg != "date")
