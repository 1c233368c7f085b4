"""Long recordings on the local engine: decoded, resampled and transcribed a window at a time,
so memory stays bounded whatever the length (issue 12: two hours of silence in a 1.3 MB FLAC
had taken a worker from 323 to 1,207 MB)."""

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from apps.engines import audio
from apps.engines.base import STTRequest
from apps.engines.local import stt
from tests.engines.test_local_stt import (
    PARAGRAPH,
    dialogue,  # noqa: F401 (fixture)
    paragraph_audio,  # noqa: F401 (fixture)
    silence,
    speak,
    speaker_accuracy,
    wav_bytes,
    wer,
)

ROOT = Path(__file__).resolve().parent.parent.parent
RATE = 16000
GROWTH_BOUND_MB = 150


def flac_of_silence(path: Path, seconds: int) -> Path:
    """``sox -n -r 16000 -c 1 silence.flac trim 0 <seconds>``, made with PyAV."""
    minute = np.zeros((1, 60 * RATE), dtype=np.int16)
    with av.open(str(path), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=RATE, layout="mono")
        for _ in range(seconds // 60):
            frame = av.AudioFrame.from_ndarray(minute, format="s16", layout="mono")
            frame.sample_rate = RATE
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


# Run in a fresh process: its peak RSS (VmHWM) after the imports, then after preparing the
# upload for transcription exactly as the engine does before Whisper hears it.
PREPARE = """
import sys
sys.path.insert(0, sys.argv[2])
from apps.engines import audio
from apps.engines.base import STTRequest
from apps.engines.local import stt

def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

before = peak_mb()
heard = 0
with open(sys.argv[1], "rb") as upload:
    seconds = audio.probe_duration(upload, "silence.flac")
    for chunk in stt.audio_chunks(STTRequest(audio=upload, filename="silence.flac")):
        heard += len(chunk.samples)
print(before, peak_mb(), seconds, heard / 16000)
"""


def test_two_hours_of_silence_are_prepared_for_transcription_in_bounded_memory(tmp_path):
    upload = flac_of_silence(tmp_path / "silence.flac", 7200)
    assert upload.stat().st_size < 2 * 1024 * 1024

    out = subprocess.run(
        [sys.executable, "-c", PREPARE, str(upload), str(ROOT)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    before, peak, declared, heard = map(float, out.stdout.split())

    assert declared == pytest.approx(7200) and heard == pytest.approx(7200)
    print(f"peak RSS {before:.0f} MB after imports, {peak:.0f} MB after two hours decoded")
    assert peak - before < GROWTH_BOUND_MB  # whole, the samples alone are 460 MB of float32


def test_a_long_recording_is_fed_in_chunks_cut_at_its_quiet_moments(tmp_path, monkeypatch):
    monkeypatch.setattr(stt, "CHUNK_SECONDS", 4.0)
    monkeypatch.setattr(audio, "WINDOW_SECONDS", 3.0)  # windows smaller than chunks
    spoken = [speak(text) for text in PARAGRAPH] * 3
    samples = np.concatenate([x for s in spoken for x in (s, silence(0.6))])
    path = tmp_path / "long.wav"
    path.write_bytes(wav_bytes(samples))

    with path.open("rb") as upload:
        chunks = list(stt.audio_chunks(STTRequest(audio=upload, filename="long.wav")))

    assert len(chunks) >= len(samples) / RATE / 6
    assert [c.start for c in chunks] == list(np.cumsum([0] + [len(c.samples) for c in chunks[:-1]]))
    assert np.array_equal(np.concatenate([c.samples for c in chunks]), audio.decode_to_pcm16k(path))
    for chunk in chunks[:-1]:  # each cut falls in a pause, not through a word
        end = chunk.samples[-800:]
        assert float(np.abs(end).max()) < 0.02
    shares = [c.share for c in chunks]
    assert shares == sorted(shares) and shares[-1] == 1.0 and shares[0] < 0.5


def test_the_windows_do_not_change_what_whisper_hears(paragraph_audio, tmp_path):  # noqa: F811
    path = tmp_path / "paragraph.wav"
    path.write_bytes(wav_bytes(paragraph_audio))
    from_bytes = stt.transcribe(STTRequest(audio=path.read_bytes(), filename="p.wav"))
    with path.open("rb") as upload:
        from_file = stt.transcribe(STTRequest(audio=upload, filename="p.wav"))
    from_path = stt.transcribe(STTRequest(audio=str(path), filename="p.wav"))

    assert from_file.text == from_bytes.text == from_path.text
    assert wer(" ".join(PARAGRAPH), from_file.text) <= 0.15
    assert from_file.audio_duration_secs == pytest.approx(len(paragraph_audio) / RATE, abs=0.01)


def test_speakers_are_told_apart_across_chunks(dialogue, monkeypatch):  # noqa: F811
    samples, turns = dialogue
    monkeypatch.setattr(stt, "CHUNK_SECONDS", 6.0)
    shares = []
    request = STTRequest(
        audio=wav_bytes(samples), filename="dialogue.wav", diarize=True, progress=shares.append
    )

    result = stt.transcribe(request)

    assert len(shares) >= 3  # it was transcribed in chunks
    assert {w.speaker_id for w in result.words if w.type == "word"} == {"speaker_0", "speaker_1"}
    assert speaker_accuracy(result.words, turns) >= 0.9
    starts = [w.start for w in result.words if w.type == "word"]
    assert starts == sorted(starts) and starts[-1] > len(samples) / RATE / 2  # offset in time


def test_raw_pcm_on_disk_is_read_a_window_at_a_time(tmp_path):
    pcm = audio.pcm16k_bytes(np.concatenate([speak(PARAGRAPH[0]), silence(0.3)]))
    path = tmp_path / "speech.pcm"
    path.write_bytes(pcm)
    with path.open("rb") as upload:
        result = stt.transcribe(STTRequest(audio=upload, file_format="pcm_s16le_16"))
    assert wer(PARAGRAPH[0], result.text) <= 0.15
    assert result.audio_duration_secs == pytest.approx(len(pcm) / 2 / RATE, abs=0.001)
