"""Phoneme rules (IPA and CMU Arpabet) said by the local espeak-ng voices."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from apps.engines import audio, base
from apps.engines.local import espeak_phonemes
from apps.engines.local.espeak_phonemes import UnmappedSymbol, ipa_to_espeak
from apps.engines.local.tts import LOCAL_VOICES
from apps.engines.pronunciation import PronunciationRule, arpabet_to_ipa, ipa_of

ESPEAK_EN = [v.voice_id for v in LOCAL_VOICES if v.backend == "espeak" and v.language == "en"]
POTATO_IPA = "pətˈeɪɾoʊ"
POTATO_CMU = "P AH0 T EY1 T OW2"


def alias(string, to, **flags) -> PronunciationRule:
    return PronunciationRule(string_to_replace=string, type="alias", alias=to, **flags)


def phoneme(string, ph, alphabet="ipa", **flags) -> PronunciationRule:
    return PronunciationRule(
        string_to_replace=string, type="phoneme", phoneme=ph, alphabet=alphabet, **flags
    )


# --- IPA → espeak-ng mnemonics -----------------------------------------------------------


@pytest.mark.parametrize(
    "ipa, mnemonics",
    [
        (POTATO_IPA, "p@t'eI*oU"),
        (arpabet_to_ipa(POTATO_CMU), "p@t'eI*oU"),  # no secondary stress after the primary
        ("ˌɪntəˈnæʃənəl", ",Int@n'aS@n@l"),
        ("təˈmɑːtəʊ", "t@m'A:toU"),  # stress moves to the vowel, as espeak-ng writes it
        ("ˈθɪŋk", "T'INk"),
        ("ˈðɛə", "D'e@"),
        ("tʃɜːtʃ", "tS3:tS"),
        ("ˈd͡ʒʌdʒ", "dZ'VdZ"),
        ("ˈvɪʒən", "v'IZ@n"),
        ("ʃˈuːɹ", "S'u:r"),
        ("bˈɚd", "b'3d"),
        ("ˌaɪˈoʊ", ",aI'oU"),
        ("bɔɪ kaʊ", "bOIkaU"),
        ("bæːd", "ba:d"),
        ("ˈbʌʔn̩", "b'V?n-"),
        ("pʰæt", "pat"),
        ("ɡæɡ", "gag"),
    ],
)
def test_ipa_becomes_espeak_mnemonics(ipa, mnemonics):
    assert ipa_to_espeak(ipa_of(phoneme("w", ipa))) == mnemonics


def test_every_arpabet_phoneme_has_a_mnemonic():
    from apps.engines.pronunciation import ARPABET_CONSONANTS, ARPABET_VOWELS

    for name in [*ARPABET_CONSONANTS, *(v + s for v in ARPABET_VOWELS for s in "012")]:
        assert ipa_to_espeak(arpabet_to_ipa(name))  # raises if a symbol has no mnemonic


@pytest.mark.parametrize("ipa, symbol", [("ɲandú", "ú"), ("ʙa", "ʙ"), ("ka̤", "a̤"), ("k|a", "|")])
def test_a_symbol_without_a_mnemonic_is_named(ipa, symbol):
    with pytest.raises(UnmappedSymbol) as caught:
        ipa_to_espeak(ipa)
    assert caught.value.symbol == symbol
    assert repr(symbol) in str(caught.value)


def _espeak_mnemonics(table: str) -> set[str]:
    """The phoneme mnemonics of an espeak-ng phoneme table and the tables it includes, read
    from the wheel's ``phontab`` (what espeak-ng accepts inside ``[[...]]``)."""
    import espeakng_loader

    data = (Path(espeakng_loader.get_data_path()) / "phontab").read_bytes()
    tables, names, offset = {}, [], 4
    for _ in range(struct.unpack_from("<i", data, 0)[0]):
        count, includes = data[offset], data[offset + 1]
        name = data[offset + 4 : offset + 36].split(b"\0")[0].decode()
        offset += 36
        mnemonics = set()
        for _ in range(count):
            (packed,) = struct.unpack_from("<I", data, offset)
            mnemonics.add(packed.to_bytes(4, "little").split(b"\0")[0].decode("latin-1"))
            offset += 16
        tables[name] = (includes, mnemonics)
        names.append(name)
    found: set[str] = set()
    while table:
        includes, mnemonics = tables[table]
        found |= mnemonics
        table = names[includes - 1] if includes else ""
    return found


@pytest.mark.parametrize("table", ["en", "en-us"])
def test_every_mnemonic_is_a_phoneme_of_the_english_tables(table):
    known = _espeak_mnemonics(table)
    assert {"eI", "t#", "3:", "dZ"} <= known  # the table was read
    missing = {m for m in espeak_phonemes.TABLE.values() if m not in known}
    assert not missing


# --- Spoken by the engine -----------------------------------------------------------------


@pytest.fixture(scope="module")
def local():
    from apps.engines.local.engine import local_engine

    return local_engine()


def _say(engine, text, rules=(), voice_id="local-espeak-en-us", fmt="pcm_22050", **extra):
    request = base.TTSRequest(
        text=text,
        voice_id=voice_id,
        seed=7,
        output_format=fmt,
        pronunciation_rules=tuple(rules),
        **extra,
    )
    return engine.tts(request, with_timestamps=True)


def _pcm(result) -> np.ndarray:
    return np.frombuffer(result.audio, np.int16)


def _heard(engine, result) -> str:
    mp3 = audio.encode(_pcm(result) / 32768.0, 22050, "mp3_44100_128")
    return engine.stt(base.STTRequest(audio=mp3, filename="s.mp3")).text.lower()


def test_the_english_espeak_voices_are_found():
    assert "local-espeak-en-us" in ESPEAK_EN and len(ESPEAK_EN) >= 3


@pytest.mark.parametrize(
    "voice_id, rule",
    [
        ("local-espeak-en-us", phoneme("tomato", POTATO_IPA)),
        ("local-espeak-en-us", phoneme("tomato", POTATO_CMU, "cmu-arpabet")),
        ("local-espeak-en-us-f3", phoneme("tomato", "/pəˈteɪɾoʊ/")),
        ("local-espeak-en-gb-f3", phoneme("tomato", POTATO_CMU, "cmu-arpabet")),
    ],
)
def test_a_phoneme_rule_is_heard_on_an_espeak_voice(local, voice_id, rule):
    text = "Please say tomato again."
    plain = _say(local, text, voice_id=voice_id)
    ruled = _say(local, text, [rule], voice_id=voice_id)
    a, b = _pcm(plain), _pcm(ruled)
    assert a.size > 22050 // 2 and b.size > 22050 // 2
    assert a.size != b.size or not np.array_equal(a, b)
    assert "potato" not in _heard(local, plain)  # Whisper tiny hears "tomato" or "to me"
    heard = _heard(local, ruled)
    if voice_id == "local-espeak-en-us":
        assert "potato" in heard and "tomato" not in heard
    else:  # Whisper tiny mishears these voices' own "potato" ("table", "title")
        said = _heard(local, _say(local, "Please say potato again.", voice_id=voice_id))
        assert heard != _heard(local, plain)
        if voice_id.startswith("local-espeak-en-us"):  # the en-us rule is its own "potato"
            assert heard == said
    assert ruled.characters == plain.characters == len(text)


def test_a_phoneme_rule_keeps_the_character_timings_in_the_text(local):
    text = "Please say tomato again."
    ruled = _say(local, text, [phoneme("tomato", POTATO_IPA)])
    alignment = ruled.alignment
    assert "".join(alignment.characters) == text
    starts = alignment.character_start_times_seconds
    ends = alignment.character_end_times_seconds
    assert starts == sorted(starts) and all(e >= s for s, e in zip(starts, ends, strict=True))
    assert ends[-1] == pytest.approx(_pcm(ruled).size / 22050, abs=0.01)
    say, tomato, again = text.index("say"), text.index("tomato"), text.index("again")
    assert starts[say] < starts[tomato] < ends[tomato + 5] <= starts[again]
    assert ends[tomato + 5] - starts[tomato] > 0.25  # the word lasts as long as its sounds


def test_text_without_matches_sounds_exactly_the_same(local):
    text = "The weather today is sunny, [[not]] rainy."
    plain = _say(local, text)
    ruled = _say(local, text, [alias("NIST", "nist"), phoneme("tomato", POTATO_IPA)])
    assert _pcm(plain).size > 22050
    assert plain.audio == ruled.audio
    assert plain.alignment == ruled.alignment


@pytest.mark.parametrize(
    "text", ['Please say "tomato" again.', "Please say (tomato) again.", "Say [[tomato]] again."]
)
def test_brackets_and_quotes_around_a_phoneme_rule(local, text):
    ruled = _say(local, text, [phoneme("tomato", POTATO_IPA)])
    assert "".join(ruled.alignment.characters) == text
    assert ruled.audio != _say(local, text).audio
    # the block is spoken, not dropped (espeak-ng skips "[[" right after "(" or a quote)
    starts = ruled.alignment.character_start_times_seconds
    ends = ruled.alignment.character_end_times_seconds
    at = text.index("tomato")
    assert ends[at + 5] - starts[at] > 0.25
    assert "tomato" not in _heard(local, ruled)


def test_an_unmapped_symbol_is_an_invalid_request_naming_rule_and_symbol(local):
    rules = [alias("NIST", "nist"), phoneme("Ñandú", "ɲanˈdú")]
    with pytest.raises(base.InvalidRequest) as caught:
        _say(local, "The Ñandú runs.", rules)
    assert "pronunciation_rules" in caught.value.fields
    message = caught.value.message
    assert "Rule 2 ('Ñandú')" in message and "'ú'" in message and "espeak-ng" in message
    with pytest.raises(base.InvalidRequest):  # a stream refuses before any audio
        local.tts_stream(
            base.TTSRequest(
                text="The Ñandú runs.",
                voice_id="local-espeak-en-us",
                seed=1,
                pronunciation_rules=tuple(rules),
            )
        )
    # the same rule in a text that does not use it is not in the way
    assert _pcm(_say(local, "The bird runs.", rules)).size > 22050 // 2


def test_a_recipe_espeak_voice_says_phoneme_rules_too(local):
    rule = phoneme("tomato", POTATO_CMU, "cmu-arpabet")
    text = "Please say tomato again."
    recipe = {"espeak_voice": "en-us+m3"}
    plain = _say(local, text, voice_id="local-joe", voice_recipe=recipe)
    ruled = _say(local, text, [rule], voice_id="local-joe", voice_recipe=recipe)
    assert plain.audio != ruled.audio
    at = text.index("tomato")
    alignment = ruled.alignment
    assert (
        alignment.character_end_times_seconds[at + 5] - alignment.character_start_times_seconds[at]
        > 0.25
    )
    assert "tomato" not in _heard(local, ruled)
