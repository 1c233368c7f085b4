"""Peak memory of an upload on its way to transcription (issue 12, item 5). Prints its figures.

Each case runs in a fresh Python process that first imports what the path needs (Django,
PyAV, numpy, the transcripts services and the local STT engine, no model loaded) and notes
its peak RSS (VmHWM), then runs the case from a file on disk and notes the peak again:

- ``check``: the upload check the studio form and ``/v1/speech-to-text`` run before anything
  is reserved (type, decodability, duration from the header, the studio's silence check);
- ``prepare``: what the transcription job does before Whisper hears anything: decode,
  resample to 16 kHz and cut into the chunks the engine is fed (at quiet moments).

on (a) a FLAC of two hours of digital silence (about 1.3 MB, the file that took a Celery
worker from 323 to 1,207 MB), (b) thirty minutes of speech-like sound (voiced syllables and
pauses) in WebM/Opus, the browser's recording format, so 48 kHz is resampled, and (c) a
200 MB WAV, the size of the studio upload that took the web process 2.5 GB.

    .venv/bin/python bench/upload_memory.py [--workdir /tmp/chorus-upload-bench]

Run it on an older checkout to compare: it uses that checkout's own code path (the whole
upload read into memory, then decoded whole) when the windowed one is not there.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RATE = 16_000


def hwm_mb() -> float:
    """This process's peak resident memory so far (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found")


# --- Test files -----------------------------------------------------------------------------


def _encode(path: Path, chunks, *, fmt: str, codec: str, rate: int) -> None:
    import av
    import numpy as np

    tmp = path.with_suffix(".part" + path.suffix)
    with av.open(str(tmp), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        for chunk in chunks:
            pcm = (np.clip(chunk, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate = rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    tmp.rename(path)


def silent_flac(path: Path, seconds: int = 7200) -> Path:
    """Two hours of 16 kHz digital silence in FLAC (what ``sox -n -r 16000 -c 1 silence.flac
    trim 0 7200`` makes)."""
    if not path.exists():
        import numpy as np

        minute = np.zeros(60 * RATE, dtype=np.float32)
        _encode(path, (minute for _ in range(seconds // 60)), fmt="flac", codec="flac", rate=RATE)
    return path


def speechlike_webm(path: Path, seconds: int = 1800) -> Path:
    """Speech-like sound at 48 kHz in WebM/Opus: voiced syllables of a gliding pitch with its
    harmonics, about four a second, in phrases of 2–6 s with pauses between them."""
    if not path.exists():
        import numpy as np

        rate = 48_000
        rng = np.random.default_rng(12)

        def phrases():
            done = 0.0
            while done < seconds:
                length = float(rng.uniform(2.0, 6.0))
                t = np.arange(int(length * rate)) / rate
                f0 = 110 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
                phase = 2 * np.pi * np.cumsum(f0) / rate
                voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
                syllables = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 2
                noise = rng.normal(0, 0.01, len(t))
                yield (0.25 * voiced * syllables + noise).astype(np.float32)
                pause = float(rng.uniform(0.3, 1.2))
                yield np.zeros(int(pause * rate), dtype=np.float32)
                done += length + pause

        _encode(path, phrases(), fmt="webm", codec="libopus", rate=rate)
    return path


def large_wav(path: Path, megabytes: int = 200) -> Path:
    """A 16 kHz mono WAV of the size in the issue (200 MB, about 1 h 49 min): quiet noise."""
    if not path.exists():
        import numpy as np

        from apps.engines.audio import wav_header

        rng = np.random.default_rng(3)
        size = megabytes * 1024 * 1024
        tmp = path.with_suffix(".part.wav")
        with tmp.open("wb") as out:
            out.write(wav_header(RATE, size))
            written = 0
            while written < size:
                block = rng.normal(0, 300, min(RATE * 60, (size - written) // 2))
                out.write(block.astype("<i2").tobytes())
                written += block.size * 2
        tmp.rename(path)
    return path


# --- One case, in its own process ------------------------------------------------------------


def run_case(case: str, path: str) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio_site.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.files import File

    from apps.engines.base import STTRequest
    from apps.engines.local import stt
    from apps.transcripts import services

    windowed = hasattr(stt, "audio_chunks")
    baseline = hwm_mb()
    name = os.path.basename(path)
    outcome = ""
    if case == "import":
        pass
    elif case == "check":
        with open(path, "rb") as handle:
            upload = File(handle, name=name)
            try:
                if windowed:
                    checked = services.upload_check(
                        upload=upload, options=services.Options(), silence=True
                    )
                    outcome = f"accepted, {checked.seconds:.0f} s"
                else:
                    outcome = f"accepted, {services._probe(upload):.0f} s"
            except services.ActionRefused as exc:
                outcome = f"refused: {exc}"
    elif case == "prepare":
        chunks = samples = 0
        if windowed:
            with open(path, "rb") as handle:
                request = STTRequest(audio=handle, filename=name)
                for chunk in stt.audio_chunks(request):
                    chunks += 1
                    samples += len(chunk.samples)
        else:  # the code before issue 12: the whole file in memory, decoded whole, then cut
            with open(path, "rb") as handle:
                data = handle.read()
            whole = stt._decode(STTRequest(audio=data, filename=name))
            size, start = int(stt.CHUNK_SECONDS * RATE), 0
            while len(whole) - start > size * 1.5:
                cut = stt._quiet_cut(whole, start + size)
                chunks, samples, start = chunks + 1, samples + cut - start, cut
            chunks, samples = chunks + 1, samples + len(whole) - start
        outcome = f"{chunks} chunks, {samples / RATE:.0f} s"
    return {
        "case": case,
        "file": name,
        "baseline_mb": round(baseline, 1),
        "peak_mb": round(hwm_mb(), 1),
        "outcome": outcome,
        "code": "windowed" if windowed else "whole-file",
    }


def measure(case: str, path: Path | str = "") -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--case", case, "--path", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if out.returncode:
        raise SystemExit(f"{case} {path} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--workdir", default=os.path.join(tempfile.gettempdir(), "chorus-upload-bench")
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--path", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.path)))
        return
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    files = [
        silent_flac(work / "silence-2h.flac"),
        speechlike_webm(work / "speech-30min.webm"),
        large_wav(work / "large-200mb.wav"),
    ]
    imported = measure("import")
    print(f"code path: {imported['code']}")
    print(f"import-only process: peak RSS {imported['baseline_mb']:.0f} MB")
    print(
        f"{'case':<8} {'file':<20} {'MB':>6} {'after imports':>14} {'peak':>7} {'growth':>7}  what"
    )
    for path in files:
        for case in ("check", "prepare"):
            row = measure(case, path)
            growth = row["peak_mb"] - row["baseline_mb"]
            size = path.stat().st_size / 1048576
            print(
                f"{case:<8} {row['file']:<20} {size:>6.1f} {row['baseline_mb']:>11.0f} MB "
                f"{row['peak_mb']:>4.0f} MB {growth:>+5.0f} MB  {row['outcome']}"
            )


if __name__ == "__main__":
    main()
