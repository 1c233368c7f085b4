"""Project export audio: assembly, BS.1770 loudness, normalisation, rules, and the files."""

import io
import math
import zipfile

import av
import numpy as np
import pytest
from mutagen.id3 import ID3
from mutagen.mp4 import MP4

from apps.engines import audio
from apps.engines.base import TTSRequest
from apps.engines.local.engine import local_engine
from apps.projects import audio_export as ae
from apps.projects.audio_export import (
    PROFILES,
    SAMPLE_RATE,
    ChapterAudio,
    CuePlacement,
    ExportAudioError,
    Piece,
)

SENTENCES = (
    "Welcome back to Chorus, where your whole team shares one voice studio.",
    "Today we will look at three ways to make a narration sound natural.",
    "Please remember to save your project before you close the window.",
)


@pytest.fixture(scope="module")
def takes():
    """Real speech from the local engine, stored three ways: MP3, WAV at 22.05 kHz, raw PCM."""
    formats = ("mp3_44100_128", "wav_22050", "pcm_16000")
    out = []
    for text, output_format in zip(SENTENCES, formats, strict=True):
        request = TTSRequest(text=text, voice_id="local-joe", output_format=output_format, seed=7)
        out.append((local_engine().tts(request).audio, output_format))
    return out


@pytest.fixture(scope="module")
def speech(takes):
    samples, _ = ae.chapter_assemble(
        [Piece(f"b{i}", data, 1000, fmt) for i, (data, fmt) in enumerate(takes)]
    )
    return samples


def sine(freq, seconds, amplitude, sr=SAMPLE_RATE):
    t = np.arange(round(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav_bytes(samples, sr=SAMPLE_RATE):
    pcm = audio.pcm16k_bytes(samples)
    return audio.wav_header(sr, len(pcm)) + pcm


def rms(x):
    x = np.asarray(x, dtype=np.float64)
    return math.sqrt(float(np.mean(x * x)))


def db(value):
    return 20 * math.log10(max(value, 1e-12))


def decode_all(path):
    with av.open(str(path)) as container:
        frames = [
            frame.to_ndarray().reshape(-1).astype(np.float32) for frame in container.decode(audio=0)
        ]
        rate = container.streams.audio[0].sample_rate
    return np.concatenate(frames), rate


def window(samples, start_s, end_s):
    return samples[round(start_s * SAMPLE_RATE) : round(end_s * SAMPLE_RATE)]


# --- Loudness ---------------------------------------------------------------------------


def test_k_weighting_at_48k_matches_the_table_of_bs_1770():
    (shelf_b, shelf_a), (high_b, high_a) = ae.k_weighting(48_000)
    np.testing.assert_allclose(shelf_b, [1.53512485958697, -2.69169618940638, 1.19839281085285])
    np.testing.assert_allclose(shelf_a, [1.0, -1.69065929318241, 0.73248077421585])
    np.testing.assert_allclose(high_b, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(high_a, [1.0, -1.99004745483398, 0.99007225036621])


def test_the_block_biquad_equals_the_sample_by_sample_recursion_across_chunks():
    (b, a), _ = ae.k_weighting(44_100)
    x = np.random.default_rng(1).standard_normal(12_000)
    expected = np.zeros_like(x)
    x1 = x2 = y1 = y2 = 0.0
    for i, value in enumerate(x):
        y = b[0] * value + b[1] * x1 + b[2] * x2 - a[1] * y1 - a[2] * y2
        x2, x1, y2, y1 = x1, value, y1, y
        expected[i] = y
    biquad = ae._Biquad(b, a)
    cuts = [0, 1, 5000, 5001, 9500, 12_000]
    got = np.concatenate([biquad(x[s:e]) for s, e in zip(cuts, cuts[1:], strict=False)])
    assert np.abs(got - expected).max() < 1e-9


@pytest.mark.parametrize("sr", [48_000, 44_100])
def test_a_997_hz_sine_at_minus_20_dbfs_reads_minus_23_lufs(sr):
    assert ae.integrated_loudness(sine(997, 20, 0.1, sr), sr) == pytest.approx(-23.01, abs=0.1)
    # 10 dB down reads 10 LU down.
    assert ae.integrated_loudness(sine(997, 20, 0.1 / math.sqrt(10), sr), sr) == pytest.approx(
        -33.01, abs=0.1
    )


def test_gating_leaves_out_quiet_passages_and_silence():
    sr = 48_000
    loud = sine(997, 10, 0.1, sr)
    quiet = sine(997, 10, 0.001, sr)  # -60 dBFS: under the relative gate
    silence = np.zeros(10 * sr, dtype=np.float32)  # under the absolute gate
    # Ungated, the mean of the three parts would read about -27.8 LUFS.
    assert ae.integrated_loudness(np.concatenate([loud, quiet, silence]), sr) == pytest.approx(
        -23.01, abs=0.1
    )
    assert ae.integrated_loudness(silence, sr) == float("-inf")
    assert ae.integrated_loudness(loud[: sr // 4], sr) == float("-inf")  # under one block


# --- Assembly ---------------------------------------------------------------------------


def test_takes_follow_each_other_with_their_pauses_and_an_after_cue_pushes_the_rest(takes):
    lengths = [ae.decode_mono(data, output_format=fmt).size for data, fmt in takes]
    # The 22.05 kHz WAV and the 16 kHz raw PCM take are resampled, not stretched.
    wav_seconds = (len(takes[1][0]) - 44) / 2 / 22_050
    assert lengths[1] / SAMPLE_RATE == pytest.approx(wav_seconds, abs=0.01)
    assert lengths[2] / SAMPLE_RATE == pytest.approx(len(takes[2][0]) / 2 / 16_000, abs=0.01)
    cue = sine(660, 1.5, 0.5)
    pieces = [Piece(f"b{i}", data, 200 + 100 * i, fmt) for i, (data, fmt) in enumerate(takes)]
    after = CuePlacement("bell", wav_bytes(cue), "b0", "after", volume_db=-6.0)
    samples, timeline = ae.chapter_assemble(pieces, [after])

    pause = [round(ms * SAMPLE_RATE / 1000) for ms in (200, 300, 400)]
    starts = [0]
    cue_start = lengths[0] + pause[0]
    starts.append(cue_start + cue.size + pause[0])
    starts.append(starts[1] + lengths[1] + pause[1])
    expected = [
        ("block", "b0", 0, lengths[0]),
        ("cue", "bell", cue_start, cue_start + cue.size),
        ("block", "b1", starts[1], starts[1] + lengths[1]),
        ("block", "b2", starts[2], starts[2] + lengths[2]),
    ]
    assert [(e.kind, e.key) for e in timeline] == [(kind, key) for kind, key, _, _ in expected]
    for entry, (_, _, start, end) in zip(timeline, expected, strict=True):
        assert entry.start_s == pytest.approx(start / SAMPLE_RATE, abs=0.001)
        assert entry.end_s == pytest.approx(end / SAMPLE_RATE, abs=0.001)
    assert samples.size == starts[2] + lengths[2] + pause[2]
    assert samples.dtype == np.float32

    bell = window(samples, timeline[1].start_s, timeline[1].end_s)
    assert db(rms(bell)) == pytest.approx(db(rms(cue)) - 6.0, abs=1.0)
    # The pauses around the cue are silent, the takes are not.
    assert rms(window(samples, timeline[0].end_s + 0.01, timeline[1].start_s - 0.01)) < 1e-4
    for entry in (timeline[0], timeline[2], timeline[3]):
        assert db(rms(window(samples, entry.start_s, entry.end_s))) > -35


def test_an_under_cue_adds_its_energy_under_its_block_at_its_volume_and_moves_nothing(takes):
    pieces = [Piece(f"b{i}", data, 300, fmt) for i, (data, fmt) in enumerate(takes)]
    bed = (np.random.default_rng(3).standard_normal(SAMPLE_RATE * 2) * 0.1).astype(np.float32)
    plain, plain_timeline = ae.chapter_assemble(pieces)
    mixed, timeline = ae.chapter_assemble(
        pieces, [CuePlacement("bed", wav_bytes(bed), "b1", "under", volume_db=-3.0)]
    )
    assert mixed.size == plain.size
    blocks = [entry for entry in timeline if entry.kind == "block"]
    assert blocks == plain_timeline
    cue = next(entry for entry in timeline if entry.kind == "cue")
    assert cue.start_s == pytest.approx(blocks[1].start_s, abs=0.001)
    assert cue.end_s == pytest.approx(blocks[1].start_s + 2.0, abs=0.001)

    added = window(mixed, cue.start_s, cue.end_s) - window(plain, cue.start_s, cue.end_s)
    assert db(rms(added)) == pytest.approx(db(rms(bed)) - 3.0, abs=1.0)
    with_cue = rms(window(mixed, cue.start_s, cue.end_s))
    without = rms(window(plain, cue.start_s, cue.end_s))
    expected = math.sqrt(without**2 + rms(bed * 10 ** (-3 / 20)) ** 2)  # uncorrelated sum
    assert db(with_cue) == pytest.approx(db(expected), abs=1.0)
    assert with_cue > without * 1.15
    # Elsewhere, nothing changed.
    np.testing.assert_array_equal(
        window(mixed, 0, blocks[1].start_s), window(plain, 0, blocks[1].start_s)
    )


def test_an_under_cue_longer_than_the_chapter_is_cut_at_its_end(takes):
    data, fmt = takes[0]
    long_bed = sine(220, 30, 0.3)
    samples, timeline = ae.chapter_assemble(
        [Piece("b0", data, 300, fmt)], [CuePlacement("bed", wav_bytes(long_bed), "b0", "under")]
    )
    assert timeline[-1].kind == "cue"
    assert timeline[-1].end_s == pytest.approx(samples.size / SAMPLE_RATE, abs=0.001)
    assert samples.size < long_bed.size
    assert abs(samples[-1]) < 1e-3  # faded, no click


@pytest.mark.parametrize(
    "cue, message",
    [
        (CuePlacement("c", b"", "nowhere", "after"), "not in this chapter"),
        (CuePlacement("c", b"", "b0", "over"), "mode must be"),
        (CuePlacement("c", b"not audio at all" * 10, "b0", "after"), "Cue c"),
    ],
)
def test_bad_cues_and_takes_are_refused_with_a_message(takes, cue, message):
    data, fmt = takes[1]
    with pytest.raises(ExportAudioError, match=message):
        ae.chapter_assemble([Piece("b0", data, 300, fmt)], [cue])
    with pytest.raises(ExportAudioError, match="take of block b9"):
        ae.chapter_assemble([Piece("b9", b"\x00\x01garbage" * 50)])
    with pytest.raises(ExportAudioError, match="at least one take"):
        ae.chapter_assemble([])


# --- Normalisation and rules -------------------------------------------------------------


def test_quiet_speech_is_normalised_to_minus_16_lufs_under_its_peak_ceiling(speech):
    quiet = speech * np.float32(0.05)
    assert ae.integrated_loudness(quiet, SAMPLE_RATE) < -35
    out = ae.normalised(quiet, SAMPLE_RATE, PROFILES["lufs16"])
    assert ae.integrated_loudness(out, SAMPLE_RATE) == pytest.approx(-16.0, abs=1.0)
    assert ae.peak_db(out) <= -1.0
    rules = ae.compliance(out, SAMPLE_RATE, PROFILES["lufs16"])
    assert [rule["rule"] for rule in rules] == ["Loudness −16 LUFS ±1", "Peak ≤ −1 dB", "Duration"]
    assert all(rule["passes"] for rule in rules), rules
    assert rules[2]["value"] == pytest.approx(speech.size / SAMPLE_RATE, abs=0.01)


def test_noisy_speech_passes_the_audiobook_rules_once_normalised_without_losing_words(speech):
    noise = np.random.default_rng(5).standard_normal(speech.size).astype(np.float32)
    noise *= np.float32(10 ** (-50 / 20))  # white noise at -50 dB RMS
    noisy = speech * np.float32(0.5) + noise
    before = {r["rule"]: r for r in ae.compliance(noisy, SAMPLE_RATE, PROFILES["audiobook"])}
    assert not before["Noise floor ≤ −60 dB"]["passes"]
    assert before["Noise floor ≤ −60 dB"]["value"] == pytest.approx(-50, abs=1.5)

    out = ae.normalised(noisy, SAMPLE_RATE, PROFILES["audiobook"])
    rules = ae.compliance(out, SAMPLE_RATE, PROFILES["audiobook"])
    assert [rule["rule"] for rule in rules] == [
        "RMS −23…−18 dB",
        "Peak ≤ −3 dB",
        "Noise floor ≤ −60 dB",
        "Duration ≤ 2 h",
    ]
    assert all(rule["passes"] for rule in rules), rules
    # The expander only turned the pauses down: speech reads as it does when the same speech
    # without noise is normalised (no noise there, so no expander), every 250 ms within 1 dB.
    clean = ae.normalised(speech * np.float32(0.5), SAMPLE_RATE, PROFILES["audiobook"])
    step = SAMPLE_RATE // 4
    compared = 0
    for start in range(0, noisy.size - step, step):
        part = slice(start, start + step)
        if db(rms(clean[part])) > -35:
            assert db(rms(out[part])) == pytest.approx(db(rms(clean[part])), abs=1.0), start
            compared += 1
    assert compared > 20


def test_compliance_flags_a_file_too_quiet(speech):
    quiet = speech * np.float32(0.02)
    lufs = ae.compliance(quiet, SAMPLE_RATE, PROFILES["lufs16"])
    assert lufs[0]["rule"] == "Loudness −16 LUFS ±1" and not lufs[0]["passes"]
    assert lufs[0]["value"] < -30 and lufs[0]["unit"] == "LUFS"
    book = {r["rule"]: r for r in ae.compliance(quiet, SAMPLE_RATE, PROFILES["audiobook"])}
    assert not book["RMS −23…−18 dB"]["passes"]
    assert book["Peak ≤ −3 dB"]["passes"]
    silent = ae.compliance(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE, PROFILES["lufs16"])
    assert silent[0]["value"] == -120.0 and not silent[0]["passes"]


# --- Files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chapters(speech):
    lufs16 = PROFILES["lufs16"]
    loud = ae.normalised(speech, SAMPLE_RATE, lufs16)
    parts = [loud[: SAMPLE_RATE * 4], loud[SAMPLE_RATE * 2 :], sine(440, 3.0, 0.3)]
    return [("Opening", parts[0]), ("Chapter 1: The Fox/Dog", parts[1]), ("Credits", parts[2])]


TAGS = {"title": "The Book", "author": "Ann Author", "language": "en", "comment": "Made in Chorus"}


def check_audio_matches(decoded, rate, chapters, marks):
    assert rate == SAMPLE_RATE
    total = sum(samples.size for _, samples in chapters)
    assert decoded.size / rate == pytest.approx(total / SAMPLE_RATE, abs=0.05)
    for mark in marks:
        got = window(decoded, mark["start_s"] + 0.1, mark["end_s"] - 0.1)
        want = window(
            np.concatenate([s for _, s in chapters]), mark["start_s"] + 0.1, mark["end_s"] - 0.1
        )
        assert db(rms(got)) == pytest.approx(db(rms(want)), abs=1.0)


def expected_marks(chapters):
    marks, position = [], 0
    for title, samples in chapters:
        marks.append((title, position / SAMPLE_RATE, (position + samples.size) / SAMPLE_RATE))
        position += samples.size
    return marks


def test_mp3_export_has_every_chapter_as_id3_chap_frames(tmp_path, chapters):
    pulled = []

    def lazily(title, samples):
        def load():
            pulled.append(title)
            return samples

        return ChapterAudio(title, load)

    out = tmp_path / "book.mp3"
    marks = ae.export_write([lazily(t, s) for t, s in chapters], "mp3", out, tags=TAGS)
    assert pulled == [title for title, _ in chapters]
    assert [(m["title"], m["start_s"], m["end_s"]) for m in marks] == expected_marks(chapters)
    decoded, rate = decode_all(out)
    check_audio_matches(decoded, rate, chapters, marks)

    id3 = ID3(out)
    assert id3.version == (2, 4, 0)
    assert id3["TIT2"].text == ["The Book"] and id3["TPE1"].text == ["Ann Author"]
    assert id3["TALB"].text == ["The Book"] and id3["TLAN"].text == ["eng"]
    toc = id3.getall("CTOC")
    assert len(toc) == 1 and toc[0].child_element_ids == ["chp0", "chp1", "chp2"]
    chaps = sorted(id3.getall("CHAP"), key=lambda frame: frame.start_time)
    assert len(chaps) == 3
    for frame, (title, start, end) in zip(chaps, expected_marks(chapters), strict=True):
        assert frame.sub_frames["TIT2"].text == [title]
        assert frame.start_time / 1000 == pytest.approx(start, abs=0.05)
        assert frame.end_time / 1000 == pytest.approx(end, abs=0.05)


def test_m4b_export_is_aac_with_chapters_read_back_by_pyav_and_mutagen(tmp_path, chapters):
    out = tmp_path / "book.m4b"
    marks = ae.export_write([ChapterAudio(t, s) for t, s in chapters], "m4b", out, tags=TAGS)
    decoded, rate = decode_all(out)
    check_audio_matches(decoded, rate, chapters, marks)
    with av.open(str(out)) as container:
        assert container.streams.audio[0].codec_context.name == "aac"
        read = container.chapters()
        assert container.metadata["major_brand"].strip() == "M4B"
    assert [c["metadata"]["title"] for c in read] == [t for t, _ in chapters]
    for chapter, (_, start, _) in zip(read, expected_marks(chapters), strict=True):
        assert float(chapter["start"] * chapter["time_base"]) == pytest.approx(start, abs=0.05)
    mp4 = MP4(out)
    assert [c.title for c in mp4.chapters] == [t for t, _ in chapters]
    assert [c.start for c in mp4.chapters] == pytest.approx(
        [start for _, start, _ in expected_marks(chapters)], abs=0.05
    )
    assert mp4.tags["©nam"] == ["The Book"] and mp4.tags["©ART"] == ["Ann Author"]
    assert not list(tmp_path.glob("*.m4a"))  # the scratch file is gone


def test_wav_export_is_one_pcm16_file_with_the_exact_samples(tmp_path, chapters):
    out = tmp_path / "book.wav"
    marks = ae.export_write([ChapterAudio(t, s) for t, s in chapters], "wav", out)
    decoded, rate = decode_all(out)
    whole = np.clip(np.concatenate([s for _, s in chapters]), -1, 1)
    assert rate == SAMPLE_RATE and decoded.size == whole.size
    assert np.abs(decoded / 32768.0 - whole).max() <= 1.5 / 32768
    assert marks[-1]["end_s"] == pytest.approx(whole.size / SAMPLE_RATE)


def test_zip_export_holds_one_decodable_file_per_chapter_in_order(tmp_path, chapters):
    out = tmp_path / "book.zip"
    names = ae.zip_write([ChapterAudio(t, s) for t, s in chapters], "mp3", out, tags=TAGS)
    with zipfile.ZipFile(out) as archive:
        assert (
            archive.namelist()
            == names
            == [
                "01 - Opening.mp3",
                "02 - Chapter 1 The Fox Dog.mp3",
                "03 - Credits.mp3",
            ]
        )
        for name, (title, samples) in zip(names, chapters, strict=True):
            data = archive.read(name)
            decoded = audio.decode_to_pcm16k(data)
            assert decoded.size / 16_000 == pytest.approx(samples.size / SAMPLE_RATE, abs=0.05)
            id3 = ID3(io.BytesIO(data))
            assert id3["TIT2"].text == [title] and id3["TALB"].text == ["The Book"]
    assert [p.name for p in tmp_path.iterdir()] == ["book.zip"]


def test_bad_exports_are_refused_and_leave_no_file(tmp_path, chapters):
    title, samples = chapters[0]
    with pytest.raises(ExportAudioError, match="Unknown export format"):
        ae.export_write([ChapterAudio(title, samples)], "flac", tmp_path / "x.flac")
    with pytest.raises(ExportAudioError, match="Unknown tags: year"):
        ae.export_write([ChapterAudio(title, samples)], "mp3", tmp_path / "x.mp3", tags={"year": 1})
    with pytest.raises(ExportAudioError, match="mono samples"):
        ae.export_write([ChapterAudio(title, np.zeros((2, 100)))], "m4b", tmp_path / "x.m4b")
    with pytest.raises(ExportAudioError, match="at least one chapter"):
        ae.export_write([], "wav", tmp_path / "x.wav")
    assert list(tmp_path.iterdir()) == []
