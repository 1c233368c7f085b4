"""Pronunciation rules: the rules themselves, PLS lexicons, and both engines applying them."""

from __future__ import annotations

import json
import threading

import httpx
import numpy as np
import pytest

from apps.engines import audio, base
from apps.engines.elevenlabs import ElevenLabsEngine
from apps.engines.pronunciation import (
    PronunciationInvalid,
    PronunciationRule,
    aliases_applied,
    arpabet_to_ipa,
    pls_parse,
    pls_write,
    rules_fingerprint,
    rules_from_json,
    rules_to_json,
)


def alias(string, to, **flags) -> PronunciationRule:
    return PronunciationRule(string_to_replace=string, type="alias", alias=to, **flags)


def phoneme(string, ph, alphabet="ipa", **flags) -> PronunciationRule:
    return PronunciationRule(
        string_to_replace=string, type="phoneme", phoneme=ph, alphabet=alphabet, **flags
    )


# --- Aliases ------------------------------------------------------------------------------


def test_an_alias_replaces_whole_words_only():
    rules = [alias("NIST", "nist")]
    assert aliases_applied("NIST and NISTER, (NIST).", rules) == "nist and NISTER, (nist)."


def test_an_alias_without_word_boundaries_replaces_inside_words():
    rules = [alias("cat", "dog", word_boundaries=False)]
    assert aliases_applied("concatenate the cat", rules) == "condogenate the dog"


def test_case_sensitivity_follows_the_rule():
    assert aliases_applied("Chorus chorus CHORUS", [alias("Chorus", "X")]) == "X chorus CHORUS"
    insensitive = [alias("Chorus", "X", case_sensitive=False)]
    assert aliases_applied("Chorus chorus CHORUS", insensitive) == "X X X"


def test_the_longest_match_wins_whatever_the_order_of_the_rules():
    rules = [alias("New", "Old"), alias("New York", "the Big Apple")]
    assert aliases_applied("New York is New", rules) == "the Big Apple is Old"


def test_replacements_are_not_replaced_again():
    rules = [alias("a", "b"), alias("b", "a")]
    assert aliases_applied("a b", rules) == "b a"
    assert aliases_applied("AI", [alias("AI", "AI AI")]) == "AI AI"


def test_phoneme_rules_leave_the_text_alone_and_no_rules_change_nothing():
    assert aliases_applied("tomato", [phoneme("tomato", "pəˈteɪtoʊ")]) == "tomato"
    assert aliases_applied("Ünïcode façade", ()) == "Ünïcode façade"
    assert aliases_applied("Ünïcode façade", [alias("façade", "fassad")]) == "Ünïcode fassad"


# --- JSON and fingerprints ----------------------------------------------------------------


def test_rules_come_and_go_in_the_api_shape():
    items = [
        {"string_to_replace": "Thailand", "type": "alias", "alias": "tie-land"},
        {
            "string_to_replace": "tomato",
            "type": "phoneme",
            "phoneme": "/təˈmeɪtoʊ/",
            "alphabet": "ipa",
            "case_sensitive": False,
        },
        {
            "string_to_replace": "potato",
            "type": "phoneme",
            "phoneme": "P AH0 T EY1 T OW2",
            "alphabet": "cmu-arpabet",
            "word_boundaries": False,
        },
    ]
    rules = rules_from_json(items)
    assert rules[0] == alias("Thailand", "tie-land")
    assert rules[1] == phoneme("tomato", "/təˈmeɪtoʊ/", case_sensitive=False)
    assert rules[2].alphabet == "cmu-arpabet" and rules[2].word_boundaries is False
    back = rules_to_json(rules)
    assert back[0] == {**items[0], "case_sensitive": True, "word_boundaries": True}
    assert rules_from_json(back) == rules


@pytest.mark.parametrize(
    "item, words",
    [
        ({"type": "alias", "alias": "x"}, "needs string_to_replace"),
        ({"string_to_replace": "a", "type": "alias"}, "needs alias"),
        ({"string_to_replace": "a", "type": "spell", "alias": "b"}, "type must be"),
        ({"string_to_replace": " ", "type": "alias", "alias": "b"}, "string_to_replace is empty"),
        ({"string_to_replace": "a", "type": "phoneme", "phoneme": "a"}, "needs alphabet"),
        (
            {"string_to_replace": "a", "type": "phoneme", "phoneme": "a", "alphabet": "sampa"},
            "alphabet must be",
        ),
        (
            {
                "string_to_replace": "a",
                "type": "phoneme",
                "phoneme": "QQ1",
                "alphabet": "cmu-arpabet",
            },
            "'QQ1' is not a CMU Arpabet phoneme",
        ),
        (
            {"string_to_replace": "a", "type": "alias", "alias": "b", "case_sensitive": "yes"},
            "case_sensitive must be true or false",
        ),
    ],
)
def test_bad_rules_are_refused_with_which_and_why(item, words):
    with pytest.raises(PronunciationInvalid, match="Rule 2") as caught:
        rules_from_json([{"string_to_replace": "ok", "type": "alias", "alias": "fine"}, item])
    assert words in str(caught.value)


def test_the_fingerprint_is_stable_and_follows_the_rules():
    rules = (alias("NIST", "nist"), phoneme("tomato", "təˈmeɪtoʊ"))
    again = rules_from_json(rules_to_json(rules))
    assert rules_fingerprint(rules) == rules_fingerprint(again)
    assert len(rules_fingerprint(rules)) == 64
    assert rules_fingerprint(rules) != rules_fingerprint((alias("NIST", "nist2"), rules[1]))
    assert rules_fingerprint(rules) != rules_fingerprint(rules[::-1])


def test_arpabet_becomes_ipa_with_stress_marks():
    assert arpabet_to_ipa("T AH0 M EY1 T OW2") == "təmˈeɪɾˌoʊ"
    assert arpabet_to_ipa("T EY1 K") == "tˈeɪk"
    assert arpabet_to_ipa("HH AH1 L OW0") == "hˈʌloʊ"
    assert arpabet_to_ipa("b er0 d") == "bɚd"


# --- PLS ----------------------------------------------------------------------------------

PLS = """<?xml version="1.0" encoding="UTF-8"?>
<lexicon version="1.0" xmlns="http://www.w3.org/2005/01/pronunciation-lexicon"
      alphabet="{alphabet}" xml:lang="en-GB">
  <lexeme><grapheme>NIST</grapheme><grapheme>N.I.S.T.</grapheme><alias>nist</alias></lexeme>
  <lexeme><grapheme>tomato</grapheme><phoneme>{ph}</phoneme></lexeme>
  <lexeme><grapheme>Zoë</grapheme><phoneme alphabet="ipa">ˈzoʊi</phoneme></lexeme>
</lexicon>"""


@pytest.mark.parametrize(
    "alphabet, ph, expected",
    [
        ("ipa", "təˈmɑːtəʊ", "ipa"),
        ("x-cmu", "T AH0 M EY1 T OW2", "cmu-arpabet"),
        ("cmu-arpabet", "T AH0 M EY1 T OW2", "cmu-arpabet"),
    ],
)
def test_a_pls_lexicon_is_read_and_written_back_identically(alphabet, ph, expected):
    lang, rules = pls_parse(PLS.format(alphabet=alphabet, ph=ph).encode())
    assert lang == "en-GB"
    assert rules == (
        alias("NIST", "nist"),
        alias("N.I.S.T.", "nist"),
        phoneme("tomato", ph, expected),
        phoneme("Zoë", "ˈzoʊi", "ipa"),
    )
    written = pls_write(rules, lang=lang)
    assert written.startswith(b"<?xml")
    assert pls_parse(written) == (lang, rules)


def test_pls_keeps_unicode_and_the_api_flags_through_a_round_trip():
    rules = (
        alias("東京", "Tokyo"),
        alias("naïve", "nah-eve", case_sensitive=False),
        phoneme("Ñandú", "ɲanˈdu", word_boundaries=False),
        phoneme("data", "D EY1 T AH0", "cmu-arpabet"),
    )
    assert pls_parse(pls_write(rules, lang="es-ES")) == ("es-ES", rules)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lexicon [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<lexicon version="1.0" xmlns="http://www.w3.org/2005/01/pronunciation-lexicon"
   alphabet="ipa" xml:lang="en-US">
  <lexeme><grapheme>lol</grapheme><alias>&lol4;</alias></lexeme>
</lexicon>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE lexicon [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<lexicon version="1.0" xmlns="http://www.w3.org/2005/01/pronunciation-lexicon"
   alphabet="ipa" xml:lang="en-US">
  <lexeme><grapheme>x</grapheme><alias>&secret;</alias></lexeme>
</lexicon>"""


@pytest.mark.parametrize(
    "data, words",
    [
        (b"this is not xml", "not well-formed XML"),
        (b"", "empty"),
        (b"<html><body>hi</body></html>", "root element is <html>"),
        (BILLION_LAUGHS, "DOCTYPE"),
        (EXTERNAL_ENTITY, "DOCTYPE"),
        (
            b'<lexicon xmlns="http://www.w3.org/2005/01/pronunciation-lexicon" alphabet="ipa">'
            b"<lexeme><alias>nist</alias></lexeme></lexicon>",
            "Lexeme 1: every lexeme needs a non-empty <grapheme>",
        ),
        (
            b'<lexicon xmlns="http://www.w3.org/2005/01/pronunciation-lexicon" alphabet="ipa">'
            b"<lexeme><grapheme>ok</grapheme><alias>fine</alias></lexeme>"
            b"<lexeme><grapheme>tomato</grapheme></lexeme></lexicon>",
            "Lexeme 2 ('tomato'): a lexeme needs an <alias> or a <phoneme>",
        ),
        (
            b'<lexicon xmlns="http://www.w3.org/2005/01/pronunciation-lexicon" alphabet="sampa">'
            b"<lexeme><grapheme>tomato</grapheme><phoneme>t@meItoU</phoneme></lexeme></lexicon>",
            "alphabet 'sampa' is not supported",
        ),
        (b"<lexicon>" + b"<!-- padding -->" * 200_000 + b"</lexicon>", "at most"),
    ],
)
def test_a_bad_lexicon_is_refused_with_a_clear_message(data, words):
    with pytest.raises(PronunciationInvalid) as caught:
        pls_parse(data)
    assert words in str(caught.value)
    assert "lol" * 100 not in str(caught.value)


# --- The local engine ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def local():
    from apps.engines.local.engine import local_engine

    return local_engine()


def _say(engine, text: str, rules=(), voice_id="local-joe", fmt="mp3_44100_128"):
    request = base.TTSRequest(
        text=text, voice_id=voice_id, seed=7, output_format=fmt, pronunciation_rules=tuple(rules)
    )
    return engine.tts(request)


def _heard(engine, speech) -> str:
    return engine.stt(base.STTRequest(audio=speech.audio, filename="s.mp3")).text.lower()


def test_an_alias_rule_is_heard(local):
    text = "Chorus ships the NIST demo"
    plain = _say(local, text, [alias("NIST", "nist")])
    aliased = _say(local, text, [alias("NIST", "nist"), alias("Chorus", "Bananas")])
    assert "banana" not in _heard(local, plain)
    assert "banana" in _heard(local, aliased)
    assert aliased.characters == plain.characters == len(text)  # billed as sent


@pytest.mark.parametrize(
    "rule",
    [phoneme("tomato", "pətˈeɪɾoʊ"), phoneme("tomato", "P AH0 T EY1 T OW2", "cmu-arpabet")],
)
def test_a_phoneme_rule_says_the_word_as_its_phonemes(local, rule):
    text = "Please say tomato again."
    plain = _say(local, text, fmt="pcm_22050")
    ruled = _say(local, text, [rule], fmt="pcm_22050")
    a = np.frombuffer(plain.audio, np.int16)
    b = np.frombuffer(ruled.audio, np.int16)
    assert a.size and b.size
    assert a.size != b.size or not np.array_equal(a, b)
    as_mp3 = lambda r: base.TTSResult(  # noqa: E731
        audio=audio.encode(np.frombuffer(r.audio, np.int16) / 32768.0, 22050, "mp3_44100_128"),
        output_format="mp3_44100_128",
        content_type="audio/mpeg",
        characters=0,
    )
    assert "potato" not in _heard(local, as_mp3(plain))
    assert "potato" in _heard(local, as_mp3(ruled))


def test_rules_that_match_nothing_leave_the_audio_unchanged(local):
    text = "The weather today is sunny."
    plain = _say(local, text, fmt="pcm_22050")
    ruled = _say(
        local, text, [alias("NIST", "nist"), phoneme("tomato", "pətˈeɪɾoʊ")], fmt="pcm_22050"
    )
    assert plain.audio == ruled.audio


def test_a_bad_rule_is_an_invalid_request_on_its_field(local):
    with pytest.raises(base.InvalidRequest) as caught:
        _say(local, "Hello there", [phoneme("hello", "h@loU", "sampa")])
    assert "pronunciation_rules" in caught.value.fields
    assert "alphabet must be" in caught.value.message


# --- The ElevenLabs engine ----------------------------------------------------------------

KEY = "sk_test_pronunciation"


class Upstream:
    """A scripted ElevenLabs: dictionary uploads answer ``upload``; TTS answers audio."""

    def __init__(self, upload: httpx.Response | None = None):
        self.requests: list[httpx.Request] = []
        self.upload = upload
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        with self.lock:
            self.requests.append(request)
            uploads = sum(1 for r in self.requests if r.url.path.endswith("/add-from-rules"))
        if request.url.path.endswith("/add-from-rules"):
            if self.upload is not None:
                return httpx.Response(
                    self.upload.status_code,
                    content=self.upload.content,
                    headers=self.upload.headers,
                )
            return httpx.Response(
                200,
                json={
                    "id": f"dict_{uploads}",
                    "name": json.loads(request.content)["name"],
                    "created_by": "u",
                    "creation_time_unix": 1,
                    "version_id": f"ver_{uploads}",
                    "version_rules_num": 2,
                    "permission_on_resource": "admin",
                },
            )
        return httpx.Response(200, content=b"ID3-audio", headers={"request-id": "req"})

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


def _eleven(upstream: Upstream) -> ElevenLabsEngine:
    return ElevenLabsEngine(
        KEY, transport=httpx.MockTransport(upstream), sleep=lambda _: None, rng=lambda: 0.5
    )


RULES = (alias("NIST", "nist"), phoneme("tomato", "T AH0 M EY1 T OW2", "cmu-arpabet"))


def test_elevenlabs_uploads_the_rules_once_and_sends_their_locator():
    upstream = Upstream()
    engine = _eleven(upstream)
    request = base.TTSRequest(text="NIST tomato", voice_id="v1", pronunciation_rules=RULES)
    engine.tts(request)
    stream = engine.tts_stream(
        base.TTSRequest(text="again", voice_id="v1", pronunciation_rules=RULES)
    )
    assert b"".join(chunk.audio for chunk in stream) == b"ID3-audio"
    assert upstream.paths() == [
        "/v1/pronunciation-dictionaries/add-from-rules",
        "/v1/text-to-speech/v1",
        "/v1/text-to-speech/v1/stream",
    ]
    upload = json.loads(upstream.requests[0].content)
    assert upload["name"] == "chorus-" + rules_fingerprint(RULES)[:12]
    assert upload["rules"] == rules_to_json(RULES)
    assert upload["rules"][1]["alphabet"] == "cmu-arpabet"
    locator = [{"pronunciation_dictionary_id": "dict_1", "version_id": "ver_1"}]
    for sent in upstream.requests[1:]:
        body = json.loads(sent.content)
        assert body["pronunciation_dictionary_locators"] == locator
        assert body["text"] in ("NIST tomato", "again")  # the engine upstream applies them


def test_elevenlabs_uploads_other_rules_separately_and_none_without_rules():
    upstream = Upstream()
    engine = _eleven(upstream)
    engine.tts(base.TTSRequest(text="hi", voice_id="v1"))
    engine.tts(base.TTSRequest(text="hi", voice_id="v1", pronunciation_rules=RULES[:1]))
    engine.tts(base.TTSRequest(text="hi", voice_id="v1", pronunciation_rules=RULES))
    engine.tts(base.TTSRequest(text="hi", voice_id="v1", pronunciation_rules=RULES[:1]))
    assert upstream.paths().count("/v1/pronunciation-dictionaries/add-from-rules") == 2
    bodies = [json.loads(r.content) for r in upstream.requests if "text-to-speech" in r.url.path]
    assert "pronunciation_dictionary_locators" not in bodies[0]
    ids = [
        b["pronunciation_dictionary_locators"][0]["pronunciation_dictionary_id"] for b in bodies[1:]
    ]
    assert ids == ["dict_1", "dict_2", "dict_1"]


def test_concurrent_requests_with_the_same_rules_upload_once():
    upstream = Upstream()
    engine = _eleven(upstream)
    request = base.TTSRequest(text="NIST", voice_id="v1", pronunciation_rules=RULES)
    threads = [threading.Thread(target=engine.tts, args=(request,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert upstream.paths().count("/v1/pronunciation-dictionaries/add-from-rules") == 1
    assert upstream.paths().count("/v1/text-to-speech/v1") == 8


def test_a_refused_upload_is_the_engines_typed_error_and_nothing_is_spoken():
    refusal = httpx.Response(
        400,
        json={"detail": {"status": "invalid_rules", "message": "Rule 1 is not valid."}},
    )
    upstream = Upstream(upload=refusal)
    engine = _eleven(upstream)
    with pytest.raises(base.EngineError) as caught:
        engine.tts(base.TTSRequest(text="NIST", voice_id="v1", pronunciation_rules=RULES))
    assert caught.value.upstream_status == 400
    assert "Rule 1 is not valid" in caught.value.message
    assert upstream.paths() == ["/v1/pronunciation-dictionaries/add-from-rules"]


def test_the_async_stream_sends_the_locators_it_is_given():
    import asyncio

    from apps.engines.elevenlabs import AsyncElevenLabsClient

    upstream = Upstream()

    async def run():
        async def handler(request):
            return upstream(request)

        async with AsyncElevenLabsClient(KEY, transport=httpx.MockTransport(handler)) as client:
            locators = [{"pronunciation_dictionary_id": "d", "version_id": "v"}]
            stream = await client.tts_stream(
                base.TTSRequest(text="hi", voice_id="v1"), locators=locators
            )
            await stream.aclose()

    asyncio.run(run())
    body = json.loads(upstream.requests[0].content)
    assert body["pronunciation_dictionary_locators"] == [
        {"pronunciation_dictionary_id": "d", "version_id": "v"}
    ]
