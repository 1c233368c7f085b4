"""The transcript document: paragraphs, edits that keep words, speakers and times consistent,
caption cue rules, and exports read back by their formats' own parsers."""

import io
import json
from types import SimpleNamespace

import pytest
import srt
import webvtt
from docx import Document

from apps.transcripts import document

TALK = [
    ("speaker_0", "Good morning and thanks for joining the call today everyone", 0.0),
    ("speaker_1", "Happy to be here shall we start with the budget for the spring", 4.2),
    ("speaker_0", "Yes the marketing team needs more money", 9.8),
]


def words_of(talk=TALK, step=0.35):
    words = []
    for speaker, sentence, start in talk:
        for k, token in enumerate(sentence.split()):
            s = round(start + k * step, 3)
            words.append({"text": token, "start": s, "end": round(s + step - 0.05, 3),
                          "type": "word", "speaker_id": speaker, "logprob": -0.1})  # fmt: skip
    return document.paragraphed(words)


def consistent(words):
    """Paragraphs numbered 0..n in time order; one speaker per paragraph; times rising."""
    numbers = [w["p"] for w in words]
    assert numbers == sorted(numbers) and set(numbers) == set(range(max(numbers) + 1))
    for p in document.paragraphs(words):
        assert len({w["speaker_id"] for _, w in p.words}) == 1
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    assert all(w["end"] >= w["start"] for w in words)


def test_paragraphs_follow_speakers_and_long_silences():
    words = words_of()
    assert [p.speaker_id for p in document.paragraphs(words)] == [
        "speaker_0",
        "speaker_1",
        "speaker_0",
    ]
    gap = words_of([("speaker_0", "one two", 0.0), ("speaker_0", "three four", 5.0)])
    assert [p.text for p in document.paragraphs(gap)] == ["one two", "three four"]
    consistent(words)


def test_editing_a_paragraph_keeps_unchanged_words_times_and_spreads_new_ones():
    words = words_of()
    before = {w["text"]: (w["start"], w["end"]) for w in words if w["p"] == 1}
    edited = document.edit_paragraph(
        words, 1, "Happy to be here. Shall we begin with the budget for spring 2027?"
    )
    para = [w for w in edited if w["p"] == 1]
    assert (
        document.join_words(para)
        == "Happy to be here. Shall we begin with the budget for spring 2027?"
    )
    assert (para[0]["start"], para[0]["end"]) == before["Happy"]
    budget = next(w for w in para if w["text"] == "budget")
    assert (budget["start"], budget["end"]) == before["budget"]
    begin = next(w for w in para if w["text"] == "begin")
    assert before["start"][0] <= begin["start"] and begin["end"] <= before["start"][1] + 0.001
    assert all(w["speaker_id"] == "speaker_1" for w in para)
    assert [w["text"] for w in edited if w["p"] == 0] == [w["text"] for w in words if w["p"] == 0]
    consistent(edited)


def test_an_empty_edit_is_refused():
    with pytest.raises(document.EditRefused, match="needs some text"):
        document.edit_paragraph(words_of(), 0, "   ")
    with pytest.raises(document.EditRefused, match="no paragraph 10"):
        document.edit_paragraph(words_of(), 9, "text")


def test_reassign_split_and_merge_keep_the_document_consistent():
    words = words_of()
    moved = document.reassign_paragraph(words, 2, "speaker_1")
    assert {w["speaker_id"] for w in moved if w["p"] == 2} == {"speaker_1"}
    split = document.split_paragraph(words, 0, 3)
    assert [p.text for p in document.paragraphs(split)][:2] == [
        "Good morning and", "thanks for joining the call today everyone",
    ]  # fmt: skip
    assert len(document.paragraphs(split)) == 4
    consistent(split)
    merged = document.merge_paragraph(split, 0)
    assert [w["p"] for w in merged] == [w["p"] for w in words]
    merged = document.merge_paragraph(words, 0)  # two speakers: the first's wins
    assert len(document.paragraphs(merged)) == 2
    consistent(merged)
    with pytest.raises(document.EditRefused, match="last paragraph"):
        document.merge_paragraph(words, 2)
    with pytest.raises(document.EditRefused, match="between two words"):
        document.split_paragraph(words, 0, 0)
    assert document.rename_speaker({}, "speaker_0", "  Ada  Lovelace ") == {
        "speaker_0": "Ada Lovelace"
    }


@pytest.mark.parametrize("rules", [document.CueRules(), document.CueRules(32, 1, 3.0)])
def test_srt_and_vtt_follow_the_cue_rules_and_parse(rules):
    long_talk = [
        ("speaker_0", " ".join(["wonderful"] * 40), 0.0),
        ("speaker_1", "short reply", 15.0),
    ]
    words = words_of(long_talk)
    subtitles = list(srt.parse(document.to_srt(words, rules)))
    assert len(subtitles) >= 3
    for sub in subtitles:
        lines = sub.content.split("\n")
        assert len(lines) <= rules.max_lines
        assert all(len(line) <= rules.max_chars for line in lines)
        assert (sub.end - sub.start).total_seconds() <= rules.max_seconds + 0.35
    assert subtitles[-1].content == "short reply"  # the speaker change starts a cue
    for before, after in zip(subtitles, subtitles[1:], strict=False):
        assert before.end <= after.start
    captions = webvtt.from_buffer(io.StringIO(document.to_vtt(words, {"speaker_1": "Bo"}, rules)))
    assert len(captions) == len(subtitles)
    assert captions[-1].voice == "Bo" and captions[-1].text == "short reply"
    assert all(len(c.lines) <= rules.max_lines for c in captions)


def transcript_of(words, **more):
    return SimpleNamespace(
        title="Budget call ✨", language_code="en", language_probability=0.98, words=words,
        speakers={"speaker_0": "Ada"}, entities=[], **more,
    )  # fmt: skip


def test_json_is_the_elevenlabs_shape_and_segments_follow_paragraphs():
    words = words_of()
    body = json.loads(document.to_json(transcript_of(words)))
    assert set(body) == {"language_code", "language_probability", "text", "words"}
    assert body["text"].startswith("Good morning and thanks")
    kinds = [w["type"] for w in body["words"]]
    assert kinds[:3] == ["word", "spacing", "word"]
    assert {"text", "start", "end", "type", "speaker_id", "logprob"} == set(body["words"][0])
    segments = json.loads(document.to_segments(transcript_of(words)))["segments"]
    assert [s["speaker"] for s in segments] == ["Ada", "Speaker 2", "Ada"]
    assert segments[1]["start"] == 4.2


def test_docx_and_txt_carry_speakers_and_times():
    words = words_of()
    doc = Document(io.BytesIO(document.to_docx(transcript_of(words))))
    texts = [p.text for p in doc.paragraphs]
    assert texts[0] == "Budget call ✨"
    assert "Ada  0:00" in texts and "Speaker 2  0:04" in texts
    assert "Yes the marketing team needs more money" in texts
    assert any(run.bold for p in doc.paragraphs for run in p.runs if run.text == "Ada")
    txt = document.to_txt(words, {"speaker_0": "Ada"}, "Budget call")
    assert "Ada (0:00)\nGood morning" in txt and "Speaker 2 (0:04)" in txt


def test_cue_rules_from_the_query_are_checked():
    assert document.CueRules.from_query({"max_chars": "30", "max_lines": "1"}).max_chars == 30
    for bad in ({"max_chars": "abc"}, {"max_lines": "9"}, {"max_seconds": "0"}):
        with pytest.raises(document.EditRefused):
            document.CueRules.from_query(bad)


def test_vtt_escapes_markup_and_long_words_stay_whole():
    words = words_of(
        [("speaker_0", "Q&A <live> supercalifragilisticexpialidociousandthensome ok", 0.0)]
    )
    vtt = document.to_vtt(words, {"speaker_0": "R&D <team>"}, document.CueRules(max_chars=20))
    captions = webvtt.from_buffer(io.StringIO(vtt))
    text = " ".join(c.text for c in captions)  # webvtt-py gives the cue text as written
    assert "Q&amp;A &lt;live&gt;" in text  # escaped, so no player reads it as a tag
    assert "supercalifragilisticexpialidociousandthensome" in text.split()
    assert "<live>" not in vtt and "R&amp;D" in vtt
