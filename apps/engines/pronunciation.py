"""Pronunciation rules: how a word is said, for every speech render on every engine.

A rule is one of the two kinds the ElevenLabs API knows (``add-from-rules``):

``alias``
    the string is replaced by another spelling before speaking ("NIST" → "nist").
``phoneme``
    the string is spoken as the given phonemes, in IPA (``ipa``) or CMU Arpabet
    (``cmu-arpabet``, converted to IPA here with ``arpabet_to_ipa``).

Matching follows the API's flags: ``case_sensitive`` (default true) and ``word_boundaries``
(default true: the string is not part of a longer word). At each position the longest
string wins, and replaced text is never matched again (one pass, no recursion).

Rules travel as JSON in the API's shape (``rules_from_json`` / ``rules_to_json``) or as a
W3C PLS 1.0 lexicon (``pls_parse`` / ``pls_write``). Pure Python, no Django.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

ALIAS = "alias"
PHONEME = "phoneme"
IPA = "ipa"
CMU = "cmu-arpabet"
ALPHABETS = (IPA, CMU)
# How PLS lexicons in the wild name the two alphabets.
_ALPHABET_NAMES = {
    "ipa": IPA,
    "cmu-arpabet": CMU,
    "x-cmu": CMU,
    "x-cmu-arpabet": CMU,
    "cmu": CMU,
    "arpabet": CMU,
}

MAX_RULES = 5_000
MAX_STRING = 500  # characters of a string_to_replace, an alias or a phoneme string
MAX_PLS_BYTES = 2 * 1024 * 1024

PLS_NAMESPACE = "http://www.w3.org/2005/01/pronunciation-lexicon"
# Where a PLS written here keeps the two API flags PLS itself has no words for.
CHORUS_NAMESPACE = "https://chorus.example/pls"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


class PronunciationInvalid(ValueError):
    """A rule or a lexicon that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class PronunciationRule:
    string_to_replace: str
    type: str  # "alias" | "phoneme"
    alias: str = ""
    phoneme: str = ""
    alphabet: str = ""  # "ipa" | "cmu-arpabet" for phoneme rules
    case_sensitive: bool = True
    word_boundaries: bool = True


# --- CMU Arpabet → IPA --------------------------------------------------------------------

# The IPA of each Arpabet phoneme as espeak-ng writes American English (what Piper's voice
# was trained on). Vowels take the stress digit: 1 → ˈ, 2 → ˌ before the vowel (espeak-ng
# marks stress just before the vowel); AH0 and ER0 are the reduced ə and ɚ.
ARPABET_VOWELS = {
    "AA": "ɑː",
    "AE": "æ",
    "AH": "ʌ",
    "AO": "ɔː",
    "AW": "aʊ",
    "AY": "aɪ",
    "EH": "ɛ",
    "ER": "ɜː",
    "EY": "eɪ",
    "IH": "ɪ",
    "IY": "iː",
    "OW": "oʊ",
    "OY": "ɔɪ",
    "UH": "ʊ",
    "UW": "uː",
}
_ARPABET_UNSTRESSED = {"AH": "ə", "ER": "ɚ", "IY": "i", "UW": "u"}
ARPABET_CONSONANTS = {
    "B": "b",
    "CH": "tʃ",
    "D": "d",
    "DH": "ð",
    "DX": "ɾ",
    "F": "f",
    "G": "ɡ",
    "HH": "h",
    "JH": "dʒ",
    "K": "k",
    "L": "l",
    "M": "m",
    "N": "n",
    "NG": "ŋ",
    "P": "p",
    "R": "ɹ",
    "S": "s",
    "SH": "ʃ",
    "T": "t",
    "TH": "θ",
    "V": "v",
    "W": "w",
    "Y": "j",
    "Z": "z",
    "ZH": "ʒ",
}
_STRESS = {"0": "", "1": "ˈ", "2": "ˌ"}
_ARPABET_SYMBOL = re.compile(r"([A-Z]{1,2})([012]?)")


def arpabet_to_ipa(phonemes: str) -> str:
    """``"T AH0 M EY1 T OW2"`` → ``"təmˈeɪɾˌoʊ"``; an unknown symbol raises
    ``PronunciationInvalid`` naming it.

    As in American English (and espeak-ng's en-us), a T or D between a vowel and an
    unstressed or secondary-stressed vowel is the flap ɾ ("water", "potato")."""
    out = []
    symbols = phonemes.upper().split()
    for index, symbol in enumerate(symbols):
        match = _ARPABET_SYMBOL.fullmatch(symbol)
        name, stress = (match.group(1), match.group(2)) if match else (symbol, "")
        if match and name in ("T", "D") and not stress and 0 < index < len(symbols) - 1:
            before, after = symbols[index - 1], symbols[index + 1]
            if before[-1:] in ("0", "1", "2") and after[-1:] in ("0", "2"):
                out.append("ɾ")
                continue
        if match and name in ARPABET_VOWELS:
            if stress == "0" and name in _ARPABET_UNSTRESSED:
                out.append(_ARPABET_UNSTRESSED[name])
            else:
                out.append(_STRESS[stress] + ARPABET_VOWELS[name])
        elif match and name in ARPABET_CONSONANTS and not stress:
            out.append(ARPABET_CONSONANTS[name])
        else:
            raise PronunciationInvalid(
                f"{symbol!r} is not a CMU Arpabet phoneme (such as 'T', 'AH0' or 'EY1')."
            )
    return "".join(out)


def ipa_of(rule: PronunciationRule) -> str:
    """The IPA a phoneme rule speaks, decomposed (NFD) as Piper's phonemes are, without the
    ``/…/`` or ``[…]`` around it nor syllable dots and spaces."""
    if rule.alphabet == CMU:
        ipa = arpabet_to_ipa(rule.phoneme)
    else:
        ipa = rule.phoneme.strip().strip("/[]")
        ipa = re.sub(r"[.\s/\[\]]+", "", ipa).replace("'", "ˈ").replace("g", "ɡ")
    return unicodedata.normalize("NFD", ipa)


# --- Validation and JSON ------------------------------------------------------------------


def _where(index: int, string: object) -> str:
    return f"Rule {index + 1}" + (f" ({string!r})" if isinstance(string, str) and string else "")


def _text(value: object, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise PronunciationInvalid(f"{where}: {what} must be a string.")
    if not value.strip():
        raise PronunciationInvalid(f"{where}: {what} is empty.")
    if len(value) > MAX_STRING:
        raise PronunciationInvalid(
            f"{where}: {what} is {len(value)} characters long; at most {MAX_STRING}."
        )
    if any(unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\t" for ch in value):
        raise PronunciationInvalid(f"{where}: {what} holds control characters.")
    return value


def _flag(value: object, what: str, where: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise PronunciationInvalid(f"{where}: {what} must be true or false.")
    return value


def rule_checked(rule: PronunciationRule, index: int = 0) -> PronunciationRule:
    """The rule if it can be used, else ``PronunciationInvalid`` saying what is wrong."""
    where = _where(index, rule.string_to_replace)
    string = _text(rule.string_to_replace, "string_to_replace", where)
    _flag(rule.case_sensitive, "case_sensitive", where, True)
    _flag(rule.word_boundaries, "word_boundaries", where, True)
    if rule.type == ALIAS:
        _text(rule.alias, "alias", where)
        if rule.phoneme or rule.alphabet:
            raise PronunciationInvalid(f"{where}: an alias rule has no phoneme or alphabet.")
    elif rule.type == PHONEME:
        _text(rule.phoneme, "phoneme", where)
        if rule.alias:
            raise PronunciationInvalid(f"{where}: a phoneme rule has no alias.")
        if rule.alphabet not in ALPHABETS:
            raise PronunciationInvalid(
                f"{where}: alphabet must be 'ipa' or 'cmu-arpabet' (got {rule.alphabet!r})."
            )
        try:
            ipa = ipa_of(rule)
        except PronunciationInvalid as exc:
            raise PronunciationInvalid(f"{where}: {exc}") from None
        if not any(unicodedata.category(ch).startswith("L") for ch in ipa):
            raise PronunciationInvalid(f"{where}: the phoneme {rule.phoneme!r} has no sounds.")
    else:
        raise PronunciationInvalid(
            f"{where}: type must be 'alias' or 'phoneme' (got {rule.type!r})."
        )
    if string != string.strip():
        raise PronunciationInvalid(f"{where}: string_to_replace starts or ends with spaces.")
    return rule


def rules_checked(rules: Iterable[PronunciationRule]) -> tuple[PronunciationRule, ...]:
    rules = tuple(rules)
    if len(rules) > MAX_RULES:
        raise PronunciationInvalid(
            f"{len(rules):,} rules: a dictionary holds at most {MAX_RULES:,}."
        )
    for index, rule in enumerate(rules):
        if not isinstance(rule, PronunciationRule):
            raise PronunciationInvalid(f"Rule {index + 1} is not a pronunciation rule.")
        rule_checked(rule, index)
    return rules


def rules_from_json(items: list[dict]) -> tuple[PronunciationRule, ...]:
    """Rules in the API's shape (``PronunciationDictionaryAliasRuleRequestModel`` /
    ``PronunciationDictionaryPhonemeRuleRequestModel``), checked; other keys are ignored."""
    if not isinstance(items, list):
        raise PronunciationInvalid("rules must be a list of rule objects.")
    rules = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise PronunciationInvalid(f"Rule {index + 1} must be an object.")
        where = _where(index, item.get("string_to_replace"))
        kind = item.get("type")
        if kind not in (ALIAS, PHONEME):
            raise PronunciationInvalid(
                f"{where}: type must be 'alias' or 'phoneme' (got {kind!r})."
            )
        required = (
            ("string_to_replace", "alias")
            if kind == ALIAS
            else (
                "string_to_replace",
                "phoneme",
                "alphabet",
            )
        )
        for name in required:
            if name not in item:
                raise PronunciationInvalid(f"{where}: a {kind} rule needs {name}.")
        alphabet = item.get("alphabet") if kind == PHONEME else ""
        if isinstance(alphabet, str):
            alphabet = _ALPHABET_NAMES.get(alphabet.strip().lower(), alphabet)
        rules.append(
            PronunciationRule(
                string_to_replace=item["string_to_replace"],
                type=kind,
                alias=item["alias"] if kind == ALIAS else "",
                phoneme=item["phoneme"] if kind == PHONEME else "",
                alphabet=alphabet,
                case_sensitive=_flag(item.get("case_sensitive"), "case_sensitive", where, True),
                word_boundaries=_flag(item.get("word_boundaries"), "word_boundaries", where, True),
            )
        )
    return rules_checked(rules)


def rules_to_json(rules: Iterable[PronunciationRule]) -> list[dict]:
    """The rules in the API's request shape (what ``add-from-rules`` takes)."""
    out = []
    for rule in rules:
        item: dict = {"string_to_replace": rule.string_to_replace, "type": rule.type}
        if rule.type == ALIAS:
            item["alias"] = rule.alias
        else:
            item["phoneme"] = rule.phoneme
            item["alphabet"] = rule.alphabet
        item["case_sensitive"] = rule.case_sensitive
        item["word_boundaries"] = rule.word_boundaries
        out.append(item)
    return out


def rules_fingerprint(rules: Iterable[PronunciationRule]) -> str:
    """A stable hash (sha256 hex) of the rules in order: the same rules give the same one."""
    canonical = json.dumps(rules_to_json(rules), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- Matching -----------------------------------------------------------------------------


def _pattern(rules: tuple[PronunciationRule, ...]) -> re.Pattern | None:
    if not rules:
        return None
    order = sorted(range(len(rules)), key=lambda i: -len(rules[i].string_to_replace))
    parts = []
    for i in order:
        rule = rules[i]
        body = re.escape(rule.string_to_replace)
        if not rule.case_sensitive:
            body = f"(?i:{body})"
        if rule.word_boundaries:
            body = rf"(?<!\w){body}(?!\w)"
        parts.append(f"(?P<r{i}>{body})")
    return re.compile("|".join(parts))


def rule_matches(
    text: str, rules: Iterable[PronunciationRule]
) -> list[tuple[int, int, PronunciationRule]]:
    """(start, end, rule) of each match in ``text``, left to right, never overlapping; at a
    position the longest string wins (then the earlier rule)."""
    rules = tuple(rules)
    pattern = _pattern(rules)
    if pattern is None:
        return []
    return [
        (m.start(), m.end(), rules[int(m.lastgroup[1:])])
        for m in pattern.finditer(text)
        if m.end() > m.start()
    ]


def alias_spans(text: str, rules: Iterable[PronunciationRule]) -> list[tuple[int, int, str]]:
    """(start, end, replacement) of each alias match in ``text``."""
    aliases = [rule for rule in rules if rule.type == ALIAS]
    return [(start, end, rule.alias) for start, end, rule in rule_matches(text, aliases)]


def aliases_applied(text: str, rules: Iterable[PronunciationRule]) -> str:
    """``text`` with the alias rules applied (phoneme rules are left to the engine)."""
    spans = alias_spans(text, rules)
    if not spans:
        return text
    out, cursor = [], 0
    for start, end, replacement in spans:
        out.append(text[cursor:start])
        out.append(replacement)
        cursor = end
    out.append(text[cursor:])
    return "".join(out)


# --- PLS 1.0 ------------------------------------------------------------------------------


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _namespace(tag: object) -> str:
    return tag[1:].split("}", 1)[0] if isinstance(tag, str) and tag.startswith("{") else ""


def _alphabet(value: str | None, where: str) -> str:
    name = _ALPHABET_NAMES.get((value or "").strip().lower())
    if name is None:
        raise PronunciationInvalid(
            f"{where}: alphabet {value!r} is not supported; use 'ipa' or 'cmu-arpabet' (x-cmu)."
        )
    return name


def _bool_attribute(element, name: str, default: bool, where: str) -> bool:
    value = element.get(f"{{{CHORUS_NAMESPACE}}}{name}")
    if value is None:
        return default
    if value.strip().lower() not in ("true", "false"):
        raise PronunciationInvalid(f"{where}: {name} must be 'true' or 'false'.")
    return value.strip().lower() == "true"


def pls_parse(data: bytes) -> tuple[str, tuple[PronunciationRule, ...]]:
    """A W3C PLS 1.0 lexicon → (its ``xml:lang``, its rules).

    Each ``<grapheme>`` of a ``<lexeme>`` becomes a rule: an ``<alias>`` rule if the lexeme
    has one, else a ``<phoneme>`` rule (the one marked ``prefer="true"``, else the first) in
    the phoneme's ``alphabet``, else the lexicon's. No DTD, no entities, no network.
    """
    from lxml import etree

    if not isinstance(data, bytes | bytearray):
        raise PronunciationInvalid("A PLS lexicon is read from bytes.")
    if len(data) > MAX_PLS_BYTES:
        raise PronunciationInvalid(
            f"The lexicon is {len(data):,} bytes; at most {MAX_PLS_BYTES:,} are read."
        )
    if not data.strip():
        raise PronunciationInvalid("The lexicon is empty: expected a PLS XML document.")
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    try:
        root = etree.fromstring(bytes(data), parser)
    except etree.XMLSyntaxError as exc:
        raise PronunciationInvalid(f"The lexicon is not well-formed XML: {exc}.") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise PronunciationInvalid(
            "The lexicon has a DOCTYPE (a DTD or entities): PLS needs none and it is refused."
        )
    if _local(root.tag) != "lexicon" or _namespace(root.tag) not in ("", PLS_NAMESPACE):
        raise PronunciationInvalid(
            f"The root element is <{_local(root.tag)}>; a PLS lexicon's root is <lexicon> "
            f"(namespace {PLS_NAMESPACE})."
        )
    lang = root.get(_XML_LANG) or ""
    lexicon_alphabet = root.get("alphabet")
    rules: list[PronunciationRule] = []
    lexemes = [child for child in root if _local(child.tag) == "lexeme"]
    for number, lexeme in enumerate(lexemes, start=1):
        where = f"Lexeme {number}"
        parts: dict[str, list] = {"grapheme": [], "alias": [], "phoneme": []}
        for child in lexeme:
            name = _local(child.tag)
            if name in parts:
                parts[name].append(child)
            elif name != "example":
                raise PronunciationInvalid(f"{where}: unexpected element <{name}>.")
        graphemes = [(g.text or "").strip() for g in parts["grapheme"]]
        if not graphemes or not all(graphemes):
            raise PronunciationInvalid(f"{where}: every lexeme needs a non-empty <grapheme>.")
        where = f"Lexeme {number} ({graphemes[0]!r})"
        case_sensitive = _bool_attribute(lexeme, "case-sensitive", True, where)
        word_boundaries = _bool_attribute(lexeme, "word-boundaries", True, where)
        if parts["alias"]:
            chosen = _preferred(parts["alias"])
            alias = chosen.text or ""
            if not alias.strip():
                raise PronunciationInvalid(f"{where}: its <alias> is empty.")
            fields = {"type": ALIAS, "alias": alias}
        elif parts["phoneme"]:
            chosen = _preferred(parts["phoneme"])
            phoneme = chosen.text or ""
            if not phoneme.strip():
                raise PronunciationInvalid(f"{where}: its <phoneme> is empty.")
            alphabet = chosen.get("alphabet") or lexicon_alphabet
            fields = {"type": PHONEME, "phoneme": phoneme, "alphabet": _alphabet(alphabet, where)}
        else:
            raise PronunciationInvalid(f"{where}: a lexeme needs an <alias> or a <phoneme>.")
        for grapheme in graphemes:
            rule = PronunciationRule(
                string_to_replace=grapheme,
                case_sensitive=case_sensitive,
                word_boundaries=word_boundaries,
                **fields,
            )
            try:
                rule_checked(rule, len(rules))
            except PronunciationInvalid as exc:
                message = str(exc).split(": ", 1)[-1]
                raise PronunciationInvalid(f"{where}: {message}") from None
            rules.append(rule)
    if len(rules) > MAX_RULES:
        raise PronunciationInvalid(
            f"{len(rules):,} rules: a dictionary holds at most {MAX_RULES:,}."
        )
    return lang, tuple(rules)


def _preferred(elements: list):
    for element in elements:
        if (element.get("prefer") or "").strip().lower() == "true":
            return element
    return elements[0]


def pls_write(rules: Iterable[PronunciationRule], *, lang: str = "en-US") -> bytes:
    """A PLS 1.0 document of the rules, one lexeme each, that ``pls_parse`` reads back
    identically. Non-default ``case_sensitive`` / ``word_boundaries`` are kept as
    attributes in Chorus's own namespace (PLS has no words for them)."""
    from lxml import etree

    rules = rules_checked(rules)
    alphabets = {rule.alphabet for rule in rules if rule.type == PHONEME}
    lexicon_alphabet = alphabets.pop() if len(alphabets) == 1 else IPA
    nsmap = {None: PLS_NAMESPACE}
    if any(not r.case_sensitive or not r.word_boundaries for r in rules):
        nsmap["chorus"] = CHORUS_NAMESPACE
    root = etree.Element(f"{{{PLS_NAMESPACE}}}lexicon", nsmap=nsmap)
    root.set("version", "1.0")
    root.set("alphabet", lexicon_alphabet)
    root.set(_XML_LANG, lang)
    for rule in rules:
        lexeme = etree.SubElement(root, f"{{{PLS_NAMESPACE}}}lexeme")
        if not rule.case_sensitive:
            lexeme.set(f"{{{CHORUS_NAMESPACE}}}case-sensitive", "false")
        if not rule.word_boundaries:
            lexeme.set(f"{{{CHORUS_NAMESPACE}}}word-boundaries", "false")
        etree.SubElement(lexeme, f"{{{PLS_NAMESPACE}}}grapheme").text = rule.string_to_replace
        if rule.type == ALIAS:
            etree.SubElement(lexeme, f"{{{PLS_NAMESPACE}}}alias").text = rule.alias
        else:
            phoneme = etree.SubElement(lexeme, f"{{{PLS_NAMESPACE}}}phoneme")
            phoneme.text = rule.phoneme
            if rule.alphabet != lexicon_alphabet:
                phoneme.set("alphabet", rule.alphabet)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
