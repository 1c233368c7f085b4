"""IPA → espeak-ng phoneme mnemonics, so that phoneme rules are said by espeak-ng voices.

espeak-ng reads phonemes inline as ``[[...]]`` when ``espeak_Synth`` is given the
``espeakPHONEMES`` flag, written in its own ASCII mnemonics (Kirshenbaum-like, see
espeak-ng's docs/phonemes.md): ``[[p@t'eIt#oU]]`` is "potato". Pronunciation rules are
IPA (CMU Arpabet rules become IPA with ``pronunciation.ipa_of``); this module converts that
IPA into mnemonics of the English phoneme tables (``en``, ``en-us``), which the other
espeak-ng languages mostly share (their own table decides the exact sound).

Each entry below was checked against espeak-ng 1.52 of the ``espeakng-loader`` wheel: the
mnemonic, spoken by the ``en-us`` voice, reports the IPA it is listed under (its phoneme
events in IPA), or the nearest English phoneme. A symbol with no entry raises
``UnmappedSymbol`` naming it: a rule is never silently dropped.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

# Longest keys are tried first, so diphthongs and affricates win over their parts. Keys
# are NFD (as ``pronunciation.ipa_of`` returns IPA).
_VOWELS = {
    # diphthongs (an r after a vowel is its own symbol: espeak-ng's en-us makes it rhotic)
    "eɪ": "eI",
    "aɪ": "aI",
    "ɔɪ": "OI",
    "aʊ": "aU",
    "oʊ": "oU",
    "əʊ": "oU",
    "ɛə": "e@",
    "eə": "e@",
    "ɪə": "i@",
    "iə": "i@",
    "ʊə": "U@",
    "aɪə": "aI@",
    "aʊə": "aU@",
    # long vowels
    "iː": "i:",
    "uː": "u:",
    "ɑː": "A:",
    "ɔː": "O:",
    "ɜː": "3:",
    "oː": "o:",
    "eː": "e:",
    # short vowels
    "ə": "@",
    "ɚ": "3",
    "ɝ": "3:",
    "ɜ": "3:",
    "æ": "a",
    "a": "a",
    "ɐ": "a#",
    "ɑ": "A:",
    "ɒ": "0",
    "ʌ": "V",
    "ɔ": "O",
    "ɛ": "E",
    "e": "e",
    "ɪ": "I",
    "ᵻ": "I#",
    "i": "i",
    "ʊ": "U",
    "u": "u:",
    "o": "o",
    # nasal vowels (NFD: vowel + combining tilde)
    "ɑ̃": "A~",
    "ɔ̃": "O~",
    # syllabic consonants (NFD: consonant + combining vertical line below)
    "n̩": "n-",
    "l̩": "l-",
    "m̩": "m-",
    "ŋ̩": "N-",
}
_CONSONANTS = {
    "tʃ": "tS",
    "t͡ʃ": "tS",
    "dʒ": "dZ",
    "d͡ʒ": "dZ",
    "p": "p",
    "b": "b",
    "t": "t",
    "d": "d",
    "k": "k",
    "ɡ": "g",
    "g": "g",
    "f": "f",
    "v": "v",
    "θ": "T",
    "ð": "D",
    "s": "s",
    "z": "z",
    "ʃ": "S",
    "ʒ": "Z",
    "h": "h",
    "m": "m",
    "n": "n",
    "ŋ": "N",
    "l": "l",
    "ɫ": "L",
    "ɹ": "r",
    "r": "r",
    "ɾ": "*",
    "j": "j",
    "w": "w",
    "ʍ": "w#",
    "ʔ": "?",
    "x": "x",
    "ç": "C",
    "ɣ": "Q",
    "β": "B",
    "ʁ": 'Q"',
    "ʀ": 'r"',
    "χ": "X",
    "ɲ": "n^",
    "ʎ": "l^",
    "c": "c",
    "ɟ": "J",
    "q": "q",
    "ɬ": "l#",
}
_STRESS = {"ˈ": "'", "ˌ": ","}
# Marks espeak-ng's English adds by itself where they belong (aspiration, linking).
_IMPLIED = {"ʰ", "‿"}
_LENGTH = "ː"

TABLE = {
    unicodedata.normalize("NFD", key): value for key, value in {**_VOWELS, **_CONSONANTS}.items()
}
_VOWEL_KEYS = frozenset(unicodedata.normalize("NFD", key) for key in _VOWELS)
_LONGEST = max(len(key) for key in TABLE)


class UnmappedSymbol(ValueError):
    """An IPA symbol with no espeak-ng mnemonic here; ``symbol`` is that symbol."""

    def __init__(self, symbol: str, ipa: str):
        self.symbol = symbol
        self.ipa = ipa
        names = ", ".join(f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')}" for ch in symbol)
        super().__init__(f"the IPA symbol {symbol!r} ({names}) in {ipa!r}")


@lru_cache(maxsize=4096)
def ipa_to_espeak(ipa: str) -> str:
    """``"pətˈeɪɾoʊ"`` → ``"p@t'eI*oU"``: espeak-ng mnemonics for an IPA string.

    Stress marks move to just before the next vowel, where espeak-ng writes them (IPA puts
    them before the syllable), and a secondary one after the primary is left out (see
    below); ``ː`` after a vowel with no long form here lengthens it.
    Raises ``UnmappedSymbol`` for a symbol it cannot say."""
    ipa = unicodedata.normalize("NFD", ipa)
    out: list[str] = []
    stress = ""
    index = 0
    while index < len(ipa):
        char = ipa[index]
        if char in _STRESS:
            # After the primary stress, espeak-ng's English leaves a full vowel unstressed
            # (its own "potato" is p@t'eIt#oU, CMU's P AH0 T EY1 T OW2): a secondary mark
            # there makes it sound like two words.
            stress = "" if char == "ˌ" and "'" in out else _STRESS[char]
            index += 1
            continue
        if char in _IMPLIED:
            index += 1
            continue
        if char == _LENGTH and out:
            if not out[-1].endswith(":"):
                out.append(":")
            index += 1
            continue
        for size in range(min(_LONGEST, len(ipa) - index), 0, -1):
            key = ipa[index : index + size]
            if key in TABLE:
                # a combining mark after the match belongs to it: only whole symbols match
                after = ipa[index + size : index + size + 1]
                if after and unicodedata.combining(after) and key + after not in TABLE:
                    continue
                if key in _VOWEL_KEYS and stress:
                    out.append(stress)
                    stress = ""
                out.append(TABLE[key])
                index += size
                break
        else:
            symbol = char
            while index + len(symbol) < len(ipa) and unicodedata.combining(
                ipa[index + len(symbol)]
            ):
                symbol += ipa[index + len(symbol)]
            raise UnmappedSymbol(unicodedata.normalize("NFC", symbol), ipa)
    return "".join(out)
