"""Live captions' latency on the local engine (``stt.RealtimeSession``): Whisper starts on the
utterance while the end-of-turn silence is still being waited for, and its result is the
committed transcript when the silence held (discarded when the speech went on); the VAD onset
is told through ``on_speech_start`` before that chunk's partial. Speech is espeak-ng's (see
test_local_stt). ``recognise`` is wrapped (the real Whisper runs) to see which thread ran it
on what."""

import threading
import time

import numpy as np
import pytest

from apps.engines.local import stt
from tests.engines.test_local_stt import pcm, silence, speak, wer

RATE = 16000
CHUNK = RATE // 10 * 2  # 100 ms


@pytest.fixture
def whisper_calls(monkeypatch):
    """Every Whisper run: (thread name, seconds of audio, text)."""
    calls = []
    real = stt.recognise

    def recognise(samples, **options):
        result = real(samples, **options)
        text = " ".join(w.text for w in result.words)
        calls.append((threading.current_thread().name, len(samples) / RATE, text))
        return result

    monkeypatch.setattr(stt, "recognise", recognise)
    return calls


def stream(session, samples: np.ndarray) -> list[tuple[int, object]]:
    """Feed in 100 ms chunks; the events with the chunk that caused them."""
    data, events = pcm(samples), []
    for i in range(0, len(data), CHUNK):
        events += [(i // CHUNK, e) for e in session.send_audio(data[i : i + CHUNK])]
    return events


def committed(events) -> list:
    return [e for _, e in events if e.message_type == "committed_transcript"]


def test_whisper_runs_ahead_during_the_silence_and_the_commit_takes_its_result(whisper_calls):
    said = "Please send me the details by Friday."
    session = stt.RealtimeSession(vad_silence_threshold_secs=0.6)
    try:
        events = stream(session, np.concatenate([silence(0.5), speak(said), silence(1.2)]))
    finally:
        session.close()
    [event] = committed(events)
    assert wer(said, event.text) <= 0.2
    # Whisper ran in the session's worker, never in the call that committed.
    assert whisper_calls and all(name.startswith("whisper-ahead") for name, _, _ in whisper_calls)
    name, seconds, text = whisper_calls[-1]
    assert event.text.split() == text.split()  # the commit is that run's result
    assert seconds < event.end - event.start + 0.01  # at most the utterance (less its tail)


def test_speech_that_resumes_after_a_pause_discards_the_guess(whisper_calls):
    first, second = "Please send me the details", "by Friday afternoon."
    # A pause (with espeak's own quiet ends) longer than the guess's wait, shorter than a turn.
    samples = [silence(0.5), speak(first), silence(0.15), speak(second), silence(1.5)]
    session = stt.RealtimeSession(vad_silence_threshold_secs=1.0)
    try:
        events = stream(session, np.concatenate(samples))
    finally:
        session.close()
    [event] = committed(events)
    assert wer(f"{first} {second}", event.text) <= 0.25
    assert "friday" in event.text.lower()  # not the guess made in the pause
    guesses = [seconds for name, seconds, _ in whisper_calls if name.startswith("whisper-ahead")]
    assert len(guesses) >= 2 and guesses[0] < guesses[-1]
    # The pause's guess heard only the first half; the committed text is the later run's.
    assert any("friday" not in text.lower() for _, _, text in whisper_calls)
    assert event.text.split() == whisper_calls[-1][2].split()


def test_the_onset_hook_fires_before_the_utterances_partials():
    session = stt.RealtimeSession(vad_silence_threshold_secs=0.6)
    onsets = []
    calls = []
    chunk_now = [0]

    def started(at: float) -> None:
        calls.append((chunk_now[0], at, session.speaking))

    session.on_speech_start = started
    parts, t = [silence(0.5)], 0.5
    for text in ("Please send me the details by Friday.", "The meeting moved to noon."):
        said = speak(text)
        parts += [said, silence(1.2)]
        onsets.append(t)
        t += len(said) / RATE + 1.2
    data, events = pcm(np.concatenate(parts)), []
    try:
        for i in range(0, len(data), CHUNK):
            chunk_now[0] = i // CHUNK
            events += [(i // CHUNK, e) for e in session.send_audio(data[i : i + CHUNK])]
    finally:
        session.close()
    assert len(calls) == 2 and len(committed(events)) == 2
    partial_chunks = [c for c, e in events if e.message_type == "partial_transcript"]
    for (chunk, at, speaking), onset, done in zip(calls, onsets, committed(events), strict=True):
        assert speaking  # the utterance is open when the hook runs
        assert abs(at - onset) < 0.6 and at == done.start
        assert chunk not in partial_chunks  # that chunk's partial waits for the next one
        later = [c for c in partial_chunks if c > chunk]
        assert later and later[0] * 0.1 < done.end  # partials of this utterance follow
    assert not session.speaking


def test_closing_stops_the_sessions_whisper_worker():
    session = stt.RealtimeSession(vad_silence_threshold_secs=0.6)
    stream(session, np.concatenate([silence(0.3), speak("Good morning to you."), silence(0.3)]))
    assert any(t.name.startswith("whisper-ahead") for t in threading.enumerate())
    session.close()
    deadline = time.monotonic() + 20
    while any(t.name.startswith("whisper-ahead") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the Whisper worker outlived its session"
        time.sleep(0.05)


def stream_live(session, samples: np.ndarray) -> tuple[list[tuple[int, object]], list]:
    """Feed 100 ms chunks at the pace of a microphone; the events with their chunk, and the
    guess under way after each chunk (``ahead_key``)."""
    data, events, keys, began = pcm(samples), [], [], time.perf_counter()
    for i in range(0, len(data), CHUNK):
        wait = began + i / (RATE * 2) - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        events += [(i // CHUNK, e) for e in session.send_audio(data[i : i + CHUNK])]
        keys.append(session.ahead_key)
    return events, keys


def test_a_finished_guess_is_told_with_its_key_and_the_commit_names_the_guess_it_took():
    said = "Please send me the details by Friday."
    session = stt.RealtimeSession(vad_silence_threshold_secs=2.0)
    guesses = []
    session.on_ahead = lambda text, key: guesses.append((text, key, threading.current_thread()))
    try:
        events, _ = stream_live(session, np.concatenate([silence(0.5), speak(said), silence(2.5)]))
    finally:
        session.close()
    [event] = committed(events)
    [(text, key, thread)] = guesses  # once: the silence held
    assert thread.name.startswith("whisper-ahead")
    assert text == event.text and wer(said, text) <= 0.2  # what the commit said, told before
    assert session.last_commit_key == key
    start, silent_from = key
    assert start / RATE == event.start and silent_from < event.end * RATE


def test_speech_that_resumes_drops_the_told_guess_and_the_commit_names_the_later_one():
    first, second = "Please send me the details", "by Friday afternoon."
    samples = [silence(0.5), speak(first), silence(1.5), speak(second), silence(3.5)]
    session = stt.RealtimeSession(vad_silence_threshold_secs=3.0)
    guesses = []
    session.on_ahead = lambda text, key: guesses.append((text, key))
    try:
        events, keys = stream_live(session, np.concatenate(samples))
    finally:
        session.close()
    [event] = committed(events)
    assert len(guesses) == 2  # the pause's guess, then the whole utterance's
    (pause_text, pause_key), (text, key) = guesses
    assert "friday" not in pause_text.lower() and text == event.text
    assert pause_key[0] == key[0] and pause_key[1] < key[1]  # one utterance, a later silence
    assert session.last_commit_key == key != pause_key
    # The pause's guess was dropped the moment the speech went on, before the next guess.
    pause_rows = [i for i, k in enumerate(keys) if k == pause_key]
    assert pause_rows and keys[pause_rows[-1] + 1] is None


def test_a_manual_commit_or_one_without_a_guess_names_none():
    session = stt.RealtimeSession(commit_strategy="manual")
    try:
        stream(session, np.concatenate([silence(0.3), speak("Good morning to you."), silence(0.3)]))
        [event] = [e for e in session.commit() if e.message_type == "committed_transcript"]
    finally:
        session.close()
    assert event.text and session.ahead_key is None and session.last_commit_key is None
