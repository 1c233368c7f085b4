"""Decoding uploads and encoding output formats with PyAV, on real tones and chirps."""

import io
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from apps.engines import audio
from apps.engines.base import OUTPUT_FORMATS, InvalidRequest, OutputFormat

RATE = 24_000


def tone(seconds=1.0, rate=RATE, freq=440.0, amplitude=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def chirp(seconds=1.0, rate=RATE, start=200.0, end=3000.0):
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * (start * t + (end - start) * t**2 / (2 * seconds))
    return (0.4 * np.sin(phase)).astype(np.float32)


def peak_frequency(samples, rate):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.argmax(spectrum) * rate / len(samples)


def probe(data):
    """(codec name, sample rate, channels, decoded seconds) of a file, read with PyAV."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.codec_context.name, stream.rate, stream.channels, samples / stream.rate


def mulaw_decode(data):
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    exponent, mantissa = (u >> 4) & 7, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude) / 32768.0


def alaw_decode(data):
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    exponent, mantissa = (a >> 4) & 7, a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return np.where(a & 0x80, magnitude, -magnitude) / 32768.0


def raw_decode(data, fmt):
    """Samples and rate of a headerless output format."""
    parsed = OutputFormat.parse(fmt)
    decoders = {"pcm": audio.samples_from_pcm16, "ulaw": mulaw_decode, "alaw": alaw_decode}
    return decoders[parsed.codec](data), parsed.sample_rate


def mux(
    fmt,
    samples=None,
    *,
    codec=None,
    rate=RATE,
    out_rate=None,
    layout="mono",
    video=None,
    seconds=1.0,
    seekable=True,
):
    """A container made by PyAV: ``samples`` encoded with ``codec``, and/or a tiny video.

    ``samples`` is one row per channel of ``layout`` (a 1-D array for mono).
    """

    class Unseekable:
        def __init__(self):
            self.buffer = io.BytesIO()

        def write(self, data):
            return self.buffer.write(data)

    sink = io.BytesIO() if seekable else Unseekable()
    with av.open(sink, "w", format=fmt) as container:
        # Every stream exists before the first packet: muxing writes the header.
        if video:
            vstream = container.add_stream(video, rate=10)
            vstream.width = vstream.height = 64
            vstream.pix_fmt = "yuv420p"
        if samples is not None:
            astream = container.add_stream(codec, rate=out_rate or rate, layout=layout)
        if video:
            for i in range(int(seconds * 10)):
                pixels = np.full((64, 64, 3), (i * 20) % 256, dtype=np.uint8)
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts = i
                container.mux(vstream.encode(frame))
            container.mux(vstream.encode(None))
        if samples is not None:
            planes = np.atleast_2d(samples)
            for start in range(0, planes.shape[1], 1024):
                block = np.ascontiguousarray(planes[:, start : start + 1024])
                frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
                frame.sample_rate = rate
                frame.time_base = Fraction(1, rate)
                frame.pts = start
                container.mux(astream.encode(frame))
            container.mux(astream.encode(None))
    return sink.getvalue() if seekable else sink.buffer.getvalue()


def field_error(call, *args, **kwargs):
    with pytest.raises(InvalidRequest) as caught:
        call(*args, **kwargs)
    assert list(caught.value.fields) == ["file"]
    assert caught.value.fields["file"] == [caught.value.message]
    return caught.value.message


# --- Encoding every output format -------------------------------------------------------


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_every_output_format_encodes_to_audio_that_decodes_back(fmt):
    samples = chirp(1.0)
    data = audio.encode(samples, RATE, fmt)
    parsed = OutputFormat.parse(fmt)

    if parsed.codec in ("pcm", "ulaw", "alaw"):
        decoded, rate = raw_decode(data, fmt)
        assert rate == parsed.sample_rate
        assert abs(len(decoded) / rate - 1.0) < 0.02
        return

    codec, rate, channels, seconds = probe(data)
    expected_codec = {"mp3": {"mp3", "mp3float"}, "opus": {"opus"}, "wav": {"pcm_s16le"}}
    assert codec in expected_codec[parsed.codec]
    assert rate == parsed.sample_rate
    assert channels == 1
    assert abs(seconds - 1.0) < 0.06


@pytest.mark.parametrize("fmt", ["mp3_44100_128", "mp3_22050_32", "opus_48000_32", "ulaw_8000"])
def test_the_tone_is_still_440_hz_after_encoding(fmt):
    data = audio.encode(tone(1.0), RATE, fmt)
    if fmt.startswith("ulaw"):
        decoded, rate = raw_decode(data, fmt)
    else:
        decoded, rate = audio.decode_to_pcm16k(data), audio.PCM16K_RATE

    assert peak_frequency(decoded, rate) == pytest.approx(440, abs=5)


@pytest.mark.parametrize(
    "fmt", ["mp3_22050_32", "mp3_44100_128", "mp3_44100_192", "opus_48000_32", "opus_48000_128"]
)
def test_the_file_has_the_bitrate_its_name_says(fmt):
    data = audio.encode(tone(2.0), RATE, fmt)

    kbps = len(data) * 8 / 2.0 / 1000
    assert kbps == pytest.approx(OutputFormat.parse(fmt).bitrate_kbps, rel=0.2)
    if fmt.startswith("mp3"):
        with av.open(io.BytesIO(data)) as container:
            bit_rate = container.streams.audio[0].codec_context.bit_rate
        assert bit_rate == OutputFormat.parse(fmt).bitrate_kbps * 1000


def test_alaw_and_pcm_keep_the_waveform():
    samples = tone(0.5, rate=8000)
    for fmt, tolerance in (("pcm_8000", 1e-4), ("alaw_8000", 0.02), ("ulaw_8000", 0.02)):
        decoded, _ = raw_decode(audio.encode(samples, 8000, fmt), fmt)
        assert np.max(np.abs(decoded - samples)) < tolerance, fmt


def test_wav_header_states_the_real_length():
    data = audio.encode(tone(0.5), RATE, "wav_16000")

    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert int.from_bytes(data[4:8], "little") == len(data) - 8
    assert int.from_bytes(data[40:44], "little") == len(data) - 44 == 8000 * 2


def test_an_unknown_output_format_is_refused_on_its_field():
    with pytest.raises(InvalidRequest) as caught:
        audio.encode(tone(0.1), RATE, "mp3_44100_999")

    assert "output_format" in caught.value.fields


def test_stereo_samples_are_refused_by_the_encoder():
    with pytest.raises(ValueError, match="mono"):
        audio.encode(np.zeros((2, 100), dtype=np.float32), RATE, "pcm_16000")


# --- Streaming --------------------------------------------------------------------------


def stream_in_chunks(fmt, samples, rate=RATE, chunk_seconds=0.1):
    encoder = audio.StreamEncoder(fmt, rate)
    step = int(rate * chunk_seconds)
    fed = [encoder.feed(samples[i : i + step]) for i in range(0, len(samples), step)]
    return fed, encoder.finish()


@pytest.mark.parametrize("fmt", ["mp3_44100_128", "pcm_16000", "ulaw_8000", "wav_24000"])
def test_streaming_gives_bytes_before_the_end(fmt):
    fed, _ = stream_in_chunks(fmt, tone(1.0))

    assert sum(len(chunk) for chunk in fed[:3]) > 0


@pytest.mark.parametrize(
    "fmt", ["mp3_44100_128", "opus_48000_64", "wav_24000", "pcm_16000", "alaw_8000"]
)
def test_streamed_chunks_join_into_the_whole_duration(fmt):
    fed, last = stream_in_chunks(fmt, chirp(1.5))
    data = b"".join(fed) + last

    if fmt.startswith(("pcm", "alaw")):
        decoded, rate = raw_decode(data, fmt)
        seconds = len(decoded) / rate
    else:
        seconds = len(audio.decode_to_pcm16k(data)) / audio.PCM16K_RATE
    # A streamed MP3 has no LAME header to trim the encoder's ~40 ms of padding.
    assert 1.5 - 0.01 <= seconds <= 1.5 + 0.06


def test_a_streamed_opus_arrives_in_pages_while_it_is_spoken():
    fed, _ = stream_in_chunks("opus_48000_64", tone(1.0))

    assert fed[0].startswith(b"OggS")
    assert sum(1 for chunk in fed if chunk) >= 5


def test_a_finished_stream_cannot_be_fed():
    encoder = audio.StreamEncoder("pcm_16000", RATE)
    encoder.finish()

    with pytest.raises(RuntimeError):
        encoder.feed(tone(0.1))
    assert encoder.finish() == b""


# --- Decoding uploads -------------------------------------------------------------------


def upload(kind, seconds=1.0):
    samples = tone(seconds)
    stereo = np.stack([samples, samples])
    makers = {
        "mp3": lambda: audio.encode(samples, RATE, "mp3_44100_64"),
        "wav": lambda: audio.encode(samples, RATE, "wav_22050"),
        "flac": lambda: mux("flac", stereo, codec="flac", layout="stereo"),
        "ogg opus": lambda: audio.encode(samples, RATE, "opus_48000_32"),
        # As MediaRecorder writes it: streamed, so no duration and no cues.
        "webm opus": lambda: mux(
            "webm", stereo, codec="libopus", out_rate=48000, layout="stereo", seekable=False
        ),
        "m4a aac": lambda: mux("ipod", stereo, codec="aac", layout="stereo"),
        "mp4 video": lambda: mux("mp4", samples, codec="aac", video="mpeg4", seconds=seconds),
        "mov video": lambda: mux("mov", samples, codec="aac", video="mpeg4", seconds=seconds),
        "mkv video": lambda: mux(
            "matroska", samples, codec="libopus", out_rate=48000, video="mpeg4", seconds=seconds
        ),
    }
    return makers[kind]()


@pytest.mark.parametrize(
    "kind",
    [
        "mp3",
        "wav",
        "flac",
        "ogg opus",
        "webm opus",
        "m4a aac",
        "mp4 video",
        "mov video",
        "mkv video",
    ],
)
def test_uploads_decode_to_16_khz_mono_of_the_right_length(kind):
    data = upload(kind, seconds=1.5)

    samples = audio.decode_to_pcm16k(data, filename=f"upload.{kind.split()[0]}")

    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / audio.PCM16K_RATE - 1.5) < 0.06
    assert np.max(np.abs(samples)) <= 1.0
    assert peak_frequency(samples, audio.PCM16K_RATE) == pytest.approx(440, abs=5)
    assert audio.probe_duration(data) == pytest.approx(1.5, abs=0.06)


def test_stereo_is_mixed_down_to_the_same_loudness_without_clipping():
    loud = tone(0.5, amplitude=0.9)
    data = mux("flac", np.stack([loud, loud]), codec="flac", layout="stereo")

    samples = audio.decode_to_pcm16k(data)

    assert np.max(np.abs(samples)) == pytest.approx(0.9, abs=0.01)


def test_an_empty_file_is_refused():
    assert field_error(audio.decode_to_pcm16k, b"") == "The file is empty."


def test_random_bytes_are_refused_as_not_audio():
    garbage = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()

    message = field_error(audio.decode_to_pcm16k, garbage, filename="noise.mp3")

    assert message.startswith("'noise.mp3' could not be decoded as audio or video: ")


def test_a_text_file_is_refused_as_not_audio():
    text = b"Dear team,\nplease find the script attached.\n" * 20

    message = field_error(audio.decode_to_pcm16k, text, filename="notes.txt")

    assert "could not be decoded as audio or video" in message


def test_a_subtitle_file_is_not_read_even_though_ffmpeg_knows_it():
    srt = b"1\n00:00:01,000 --> 00:00:02,000\nHello there\n\n"

    message = field_error(audio.decode_to_pcm16k, srt, filename="captions.srt")

    assert "is not an audio or video format" in message


def test_a_truncated_mp3_is_refused():
    data = audio.encode(tone(1.0), RATE, "mp3_44100_128")

    message = field_error(audio.decode_to_pcm16k, data[:300], filename="cut.mp3")

    assert "'cut.mp3'" in message


def test_an_mp3_cut_off_halfway_gives_the_part_that_is_there():
    data = audio.encode(tone(2.0), RATE, "mp3_44100_128")

    samples = audio.decode_to_pcm16k(data[: len(data) // 2])

    assert 0.9 < len(samples) / audio.PCM16K_RATE < 1.1


def test_a_webm_cut_off_in_its_header_is_refused_as_cut_off():
    data = upload("webm opus")

    message = field_error(audio.decode_to_pcm16k, data[:200], filename="take.webm")

    assert message == (
        "'take.webm' could not be decoded as audio or video: "
        "it ends too early (the file may be cut off)."
    )


def test_a_video_without_sound_is_refused_for_having_no_audio_track():
    data = mux("mp4", video="mpeg4", seconds=0.5)

    message = field_error(audio.decode_to_pcm16k, data, filename="silent.mp4")

    assert message == "'silent.mp4' has no audio track."
    assert field_error(audio.probe_duration, data) == "The file has no audio track."


def test_a_file_over_the_limit_is_refused_from_its_header():
    data = audio.encode(tone(3.0), RATE, "wav_8000")

    message = field_error(audio.decode_to_pcm16k, data, max_seconds=1)

    assert message == "The audio is 3 s long; the limit is 1 s."


def test_a_file_with_no_stated_length_stops_decoding_at_the_limit(monkeypatch):
    data = upload("webm opus", seconds=4.0)
    decoded = []
    frames = audio._decoded_frames

    def counting(*args):
        for frame in frames(*args):
            decoded.append(frame.samples / frame.sample_rate)
            yield frame

    monkeypatch.setattr(audio, "_decoded_frames", counting)

    message = field_error(audio.decode_to_pcm16k, data, max_seconds=1)

    assert message == "The audio is longer than the 1 s limit."
    assert sum(decoded) < 2.2


def test_a_file_just_within_the_limit_is_accepted():
    data = audio.encode(tone(2.0), RATE, "wav_16000")

    assert len(audio.decode_to_pcm16k(data, max_seconds=2)) == 32000


def test_a_header_that_understates_the_length_is_caught_while_decoding(monkeypatch):
    data = audio.encode(tone(4.0), RATE, "wav_16000")
    monkeypatch.setattr(audio, "_declared_duration", lambda container, stream: 1.0)  # it lies

    with audio.Pcm16kReader(data, max_seconds=2) as reader:
        assert reader.declared_seconds == 1.0  # within the limit: decoding starts
        with pytest.raises(InvalidRequest) as caught:
            for _window in reader.windows(0.5):
                pass

    # Stopped near the length the header states (what was reserved), not at the limit.
    assert caught.value.fields["file"][0].startswith(
        "The file plays longer than its header says (1 s)"
    )
    assert reader.decoded < 2.2 * audio.PCM16K_RATE  # it stopped, not decoded to the end


def test_an_upload_reads_the_same_from_bytes_a_path_or_an_open_file(tmp_path):
    data = audio.encode(chirp(3.0), RATE, "mp3_44100_128")
    path = tmp_path / "take.mp3"
    path.write_bytes(data)
    whole = audio.decode_to_pcm16k(data)

    with path.open("rb") as handle:
        assert np.array_equal(audio.decode_to_pcm16k(handle), whole)
    assert np.array_equal(audio.decode_to_pcm16k(str(path)), whole)
    assert np.array_equal(audio.decode_to_pcm16k(path), whole)
    assert audio.probe_duration(path) == pytest.approx(len(whole) / audio.PCM16K_RATE, abs=0.06)
    with audio.Pcm16kReader(path) as reader:
        windows = list(reader.windows(0.7))
    assert [len(w) for w in windows[:-1]] == [int(0.7 * audio.PCM16K_RATE)] * (len(windows) - 1)
    assert np.array_equal(np.concatenate(windows), whole)
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    assert (
        field_error(audio.decode_to_pcm16k, empty, filename="empty.mp3") == "'empty.mp3' is empty."
    )


def test_raw_pcm_is_timed_by_its_size_before_it_is_read():
    pcm = audio.pcm16k_bytes(tone(3.0, rate=16000))

    with audio.RawPcm16kReader(pcm, max_seconds=10) as reader:
        assert reader.declared_seconds == 3.0
        assert np.array_equal(
            np.concatenate(list(reader.windows(1.0))), audio.samples_from_pcm16(pcm)
        )
    with pytest.raises(InvalidRequest) as caught:
        audio.RawPcm16kReader(pcm, max_seconds=1).__enter__()
    assert caught.value.fields["file"] == ["The audio is 3 s long; the limit is 1 s."]
    with pytest.raises(InvalidRequest, match="even number of bytes"):
        audio.RawPcm16kReader(pcm + b"\0").__enter__()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(2.5, "2.5 s"), (90, "1 min 30 s"), (7200, "2 h"), (3 * 3600 + 125, "3 h 2 min")],
)
def test_durations_read_as_people_write_them(seconds, text):
    assert audio.format_duration(seconds) == text


def test_a_length_just_over_a_limit_never_reads_as_the_limit():
    assert audio.format_duration(7200.5, round_up=True) == "2 h 1 min"


# --- Raw samples ------------------------------------------------------------------------


def test_pcm16_bytes_round_trip_exactly():
    samples = audio.samples_from_pcm16(audio.pcm16k_bytes(chirp(0.2, rate=16000)))

    assert audio.pcm16k_bytes(samples) == audio.pcm16k_bytes(chirp(0.2, rate=16000))
    assert audio.duration_of(samples, 16000) == pytest.approx(0.2)


def test_pcm16_clips_instead_of_wrapping_around():
    data = audio.pcm16k_bytes(np.array([1.5, -1.5, 1.0], dtype=np.float32))

    assert np.frombuffer(data, dtype="<i2").tolist() == [32767, -32768, 32767]


def test_pcm16_with_an_odd_byte_is_refused():
    with pytest.raises(InvalidRequest) as caught:
        audio.samples_from_pcm16(b"\x00\x01\x02")

    assert "audio" in caught.value.fields


# --- Speed ------------------------------------------------------------------------------


def test_decoding_takes_under_a_twentieth_of_real_time():
    data = audio.encode(chirp(20.0), RATE, "mp3_44100_128")

    started = time.process_time()  # CPU time: the decoder's own cost, not the machine's load
    samples = audio.decode_to_pcm16k(data)
    elapsed = time.process_time() - started

    assert len(samples) == 20 * 16000
    assert elapsed / 20 < 0.05
