"""The local engine's speed and memory, as issue 3 sets them out. Prints its figures.

- TTS time to first audio for a first sentence of ≤ 12 words (target ≤ 250 ms), and RTF
- STT batch RTF on ~30 s of speech (target ≤ 0.3 on 2 cores), with its WER
- realtime: processing per 100 ms chunk, and audio-to-first-partial latency fed in real time
- peak RSS of this one process with every local model loaded (target ≤ 1.2 GB)

    .venv/bin/python bench/engines.py [--runs 10]
"""

import argparse
import re
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.engines import audio, base  # noqa: E402
from apps.engines.local.engine import local_engine  # noqa: E402

FIRST = "The quick brown fox jumps over the lazy dog by the river."  # 12 words
REST = (
    " Then the sun went down behind the hills, and the village lights came on one by one."
    " Somewhere a dog barked twice, and the night settled in."
)
LONG = (
    "Chorus turns scripts into narration for the whole team. Every member can pick a voice, "
    "type a paragraph and hear it a moment later. Managers see what each generation costs "
    "before anyone clicks. Transcripts come back with words, times and speakers, and live "
    "captions follow the microphone as people talk. Everything here runs on this server, "
    "with no key and no internet, so drafts cost nothing at all. When the final take is "
    "ready, the same script can go to the real service for the finished recording."
)


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def words(text):
    return re.findall(r"[a-z']+", text.lower())


def wer(reference, hypothesis):
    r, h = words(reference), words(hypothesis)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)] / max(1, len(r))


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    engine = local_engine()
    print(f"start: peak RSS {rss_mb():.0f} MB")

    # Load every model once (what a worker process does on its first job).
    t = time.perf_counter()
    engine.tts(base.TTSRequest(text="Warm up.", voice_id="local-joe", seed=1))
    engine.tts(base.TTSRequest(text="Warm up.", voice_id="local-espeak-en-us", seed=1))
    tts_load = time.perf_counter() - t
    speech = engine.tts(
        base.TTSRequest(text=LONG, voice_id="local-joe", seed=1, output_format="wav_16000")
    )
    t = time.perf_counter()
    engine.stt(base.STTRequest(audio=speech.audio[: 16000 * 2 + 44], filename="w.wav"))
    stt_load = time.perf_counter() - t
    t = time.perf_counter()
    session = engine.stt_realtime()
    rt_load = time.perf_counter() - t
    print(
        f"load: TTS {tts_load:.2f} s (Piper + espeak), Whisper tiny.en {stt_load:.2f} s, "
        f"realtime session {rt_load:.2f} s"
    )

    # TTS: time to first audio, streamed, first sentence of 12 words.
    for voice in ("local-joe", "local-espeak-en-us"):
        ttfa = []
        for run in range(args.runs):
            started = time.perf_counter()
            stream = engine.tts_stream(base.TTSRequest(text=FIRST + REST, voice_id=voice, seed=run))
            for _chunk in stream:
                ttfa.append((time.perf_counter() - started) * 1000)
                break
            stream.close()
        started = time.perf_counter()
        result = engine.tts(base.TTSRequest(text=LONG, voice_id=voice, seed=1))
        rtf = (time.perf_counter() - started) / result.duration_secs
        print(
            f"TTS {voice:<20} first audio p50 {statistics.median(ttfa):6.1f} ms  "
            f"p95 {pct(ttfa, 95):6.1f} ms   RTF {rtf:.3f} ({result.duration_secs:.1f} s of audio)"
        )

    # STT batch RTF on ~30 s of speech.
    clip = engine.tts(
        base.TTSRequest(text=LONG, voice_id="local-joe", seed=2, output_format="wav_16000")
    )
    seconds = clip.duration_secs
    times = []
    for _ in range(3):
        started = time.perf_counter()
        transcript = engine.stt(base.STTRequest(audio=clip.audio, filename="long.wav"))
        times.append(time.perf_counter() - started)
    print(
        f"STT batch: {seconds:.1f} s of speech in {statistics.median(times):.2f} s  "
        f"RTF {statistics.median(times) / seconds:.3f}   WER {wer(LONG, transcript.text):.1%}"
    )

    # Realtime: feed 100 ms chunks at real-time pace.
    samples = audio.decode_to_pcm16k(
        engine.tts(
            base.TTSRequest(text=FIRST, voice_id="local-joe", seed=3, output_format="wav_16000")
        ).audio
    )
    pcm = audio.pcm16k_bytes(samples)
    silence = b"\0\0" * 16000
    stream = silence + pcm + silence * 2
    chunk = 3200  # 100 ms
    onset = len(silence) / 32000
    per_chunk, first_partial, committed = [], None, None
    session = engine.stt_realtime()
    t0 = time.perf_counter()
    for i in range(0, len(stream), chunk):
        due = t0 + i / 32000
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        started = time.perf_counter()
        events = session.send_audio(stream[i : i + chunk])
        per_chunk.append((time.perf_counter() - started) * 1000)
        for event in events:
            now = time.perf_counter() - t0
            if event.message_type == "partial_transcript" and first_partial is None:
                first_partial = now - onset
            if event.message_type == "committed_transcript" and committed is None:
                committed = (now - (onset + len(pcm) / 32000), event.text)
    session.close()
    print(
        f"realtime: processing per 100 ms chunk p50 {statistics.median(per_chunk):.1f} ms "
        f"p95 {pct(per_chunk, 95):.1f} ms; first partial {first_partial * 1000:.0f} ms after "
        f"speech began"
        if first_partial is not None
        else "realtime: no partial"
    )
    if committed:
        print(
            f"realtime: committed {committed[0]:.2f} s after speech ended "
            f"(VAD silence + Whisper): {committed[1]!r}"
        )
    print(f"peak RSS with every local model loaded: {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
