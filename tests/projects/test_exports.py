"""Exports of a project, with real audio: drafts rendered on the local engine, exported as a
job, decoded with PyAV and measured (length, loudness, chapter markers read back by mutagen
and PyAV, cue energy where the cue was placed), the report's takes and recipes, refusals,
cancelling, and the /v1 convert's snapshot."""

import re
import tempfile
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
from django.urls import reverse
from mutagen.id3 import ID3
from mutagen.mp4 import MP4

from apps.engines.base import SoundRequest
from apps.generation.caller import Caller
from apps.generation.media import sound
from apps.history.models import Generation
from apps.jobs.models import Job, JobStatus
from apps.jobs.services import JobCancelled
from apps.projects import exports, narration
from apps.projects.audio_export import integrated_loudness, noise_floor_db, peak_db, rms_db
from apps.projects.models import (
    Block,
    Chapter,
    Cue,
    Export,
    Render,
    RenderScope,
    RenderState,
)
from apps.workspaces.models import Membership

from .conftest import run_job

PAUSE = exports.PAUSE_MS / 1000


# --- Helpers --------------------------------------------------------------------------------


def decoded(source) -> tuple[np.ndarray, int]:
    """Any audio file (a path or a file object) as mono float32 samples and their rate."""
    with av.open(source) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        parts = []
        for frame in container.decode(stream):
            parts += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
        parts += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(parts).astype(np.float32), rate


def seconds_of(source) -> float:
    samples, rate = decoded(source)
    return samples.size / rate


def window_db(samples: np.ndarray, rate: int, start: float, end: float) -> float:
    return rms_db(samples[int(start * rate) : int(end * rate)])


def rendered(project, user, *, scope=RenderScope.PROJECT, target=None) -> Render:
    render = narration.render_request(
        workspace=project.workspace,
        user=user,
        membership=Membership.objects.get(workspace=project.workspace, user=user),
        project=project,
        scope=scope,
        target=target,
        draft=True,
    )
    job = run_job(render.job)
    assert job.status == JobStatus.SUCCEEDED, job.error
    return render


def exported(project, user, **kwargs) -> Export:
    export = exports.export_start(workspace=project.workspace, user=user, project=project, **kwargs)
    job = run_job(export.job)
    assert job.status == JobStatus.SUCCEEDED, job.error
    export.refresh_from_db()
    assert export.file and export.finished_at is not None
    assert export.size_bytes == Path(export.file.path).stat().st_size > 0
    return export


def chapters_of(project) -> list[Chapter]:
    return list(project.chapters.order_by("position"))


def blocks_of(chapter) -> list[Block]:
    return list(chapter.blocks.select_related("chosen__generation").order_by("position"))


def take_seconds(block) -> float:
    return seconds_of(block.chosen.generation.file.path)


def sound_clip(workspace, user, seconds: float) -> Generation:
    """A sound effect made by the local engine (rain: steady energy from start to end)."""
    caller = Caller(
        workspace=workspace,
        user=user,
        engine_kind="local",
        draft=True,
        purpose=("project_cue", "test"),
    )
    clip = sound(
        caller=caller,
        request=SoundRequest(text="steady rain on a tin roof", duration_seconds=seconds, seed=11),
    )
    return Generation.objects.get(history_item_id=clip.history_item_id)


# --- MP3 of the whole project ---------------------------------------------------------------


def test_an_mp3_export_is_the_takes_back_to_back_at_minus_16_lufs_with_id3_chapters(
    project, member, client_as
):
    rendered(project, member)
    export = exports.export_start(workspace=project.workspace, user=member, project=project)
    job = export.job
    assert job.kind == "project_export" and job.status == JobStatus.QUEUED
    assert job.subject == "MP3 export of Harbour tales"
    assert job.result_url == reverse("projects:exports", args=[project.public_id])
    assert job.inputs["chapters"] == 2 and job.inputs["seconds"] > 3
    export = exported(project, member)
    assert export.format == "mp3" and export.profile == "lufs16" and export.chapter is None

    samples, rate = decoded(export.file.path)
    seconds = samples.size / rate
    chapters = chapters_of(project)
    expected = sum(take_seconds(b) + PAUSE for c in chapters for b in blocks_of(c))
    assert seconds == pytest.approx(expected, abs=0.15)
    assert export.duration_seconds == pytest.approx(seconds, abs=0.1)
    loudness = integrated_loudness(samples, rate)
    print(f"MP3 export: {seconds:.2f} s, integrated loudness {loudness:.2f} LUFS")
    assert loudness == pytest.approx(-16.0, abs=1.0)
    assert peak_db(samples) <= -0.5

    report = export.report
    assert report["format"] == "mp3" and report["profile"] == "lufs16" and report["passes"]
    assert [c["title"] for c in report["chapters"]] == ["The harbour", "The hill"]
    first = report["chapters"][0]
    assert first["start_s"] == 0
    harbour = sum(take_seconds(b) + PAUSE for b in blocks_of(chapters[0]))
    assert report["chapters"][1]["start_s"] == pytest.approx(harbour, abs=0.1)
    assert report["chapters"][1]["end_s"] == pytest.approx(seconds, abs=0.1)
    for entry in report["chapters"]:
        rules = {rule["rule"]: rule for rule in entry["compliance"]}
        assert rules["Loudness −16 LUFS ±1"]["passes"]
        assert rules["Loudness −16 LUFS ±1"]["value"] == pytest.approx(-16.0, abs=0.5)
        assert rules["Peak ≤ −1 dB"]["passes"]
    # Every take used, with its recipe, in order.
    for entry, chapter in zip(report["chapters"], chapters, strict=True):
        blocks = blocks_of(chapter)
        assert [b["block"] for b in entry["blocks"]] == [b.public_id for b in blocks]
        for row, block in zip(entry["blocks"], blocks, strict=True):
            assert row["take"] == block.chosen_id and row["draft"] is True
            assert row["generation"] == block.chosen.generation.history_item_id
            assert row["recipe"] == block.chosen.generation.recipe
            assert row["recipe"]["text"] == block.text
            assert entry["start_s"] <= row["start_s"] < row["end_s"] <= entry["end_s"]
            # The block really is heard there: speech in its window, silence in its pause.
            assert window_db(samples, rate, row["start_s"], row["end_s"]) > -35
    assert len(report["takes"]) == 5

    # ID3v2.4 chapter frames, read by mutagen, name each chapter where the report says.
    id3 = ID3(export.file.path)
    assert id3["TIT2"].text == ["Harbour tales"] and id3["TALB"].text == ["Harbour tales"]
    assert id3["TPE1"].text == ["A. Writer"] and id3["TLAN"].text == ["eng"]
    chaps = sorted(id3.getall("CHAP"), key=lambda frame: frame.start_time)
    assert [frame.sub_frames["TIT2"].text[0] for frame in chaps] == ["The harbour", "The hill"]
    for frame, entry in zip(chaps, report["chapters"], strict=True):
        assert frame.start_time / 1000 == pytest.approx(entry["start_s"], abs=0.05)
        assert frame.end_time / 1000 == pytest.approx(entry["end_s"], abs=0.05)

    # The page: the player, the download and the compliance report.
    client = client_as(member)
    page = client.get(reverse("projects:exports", args=[project.public_id]))
    body = page.content.decode()
    url = reverse("projects:export_download", args=[project.public_id, export.public_id])
    assert page.status_code == 200
    assert f'<audio controls preload="none" src="{url}"' in body
    assert f'href="{url}?download=1"' in body
    assert "Compliance report" in body and body.count('data-passes="yes"') == 2 * 3
    assert 'data-passes="no"' not in body
    whole = client.get(url + "?download=1")
    assert whole.status_code == 200 and whole["Content-Type"] == "audio/mpeg"
    assert whole["Content-Disposition"] == 'attachment; filename="harbour-tales.mp3"'
    assert b"".join(whole.streaming_content) == Path(export.file.path).read_bytes()
    part = client.get(url, HTTP_RANGE="bytes=100-199")
    assert part.status_code == 206 and len(part.content) == 100
    assert part["Content-Range"] == f"bytes 100-199/{export.size_bytes}"


# --- M4B, WAV, ZIP, a chapter ---------------------------------------------------------------


def test_m4b_wav_zip_and_chapter_exports_read_back(project, member):
    rendered(project, member)
    harbour, hill = chapters_of(project)

    m4b = exported(project, member, fmt="m4b")
    marks = m4b.report["chapters"]
    with av.open(m4b.file.path) as container:
        assert container.streams.audio[0].codec_context.name == "aac"
        read = container.chapters()
    assert [c["metadata"]["title"] for c in read] == ["The harbour", "The hill"]
    for chapter, entry in zip(read, marks, strict=True):
        assert float(chapter["start"] * chapter["time_base"]) == pytest.approx(
            entry["start_s"], abs=0.05
        )
    mp4 = MP4(m4b.file.path)
    assert [c.title for c in mp4.chapters] == ["The harbour", "The hill"]
    assert [c.start for c in mp4.chapters] == pytest.approx(
        [entry["start_s"] for entry in marks], abs=0.05
    )
    assert mp4.tags["©nam"] == ["Harbour tales"] and mp4.tags["©ART"] == ["A. Writer"]
    samples, rate = decoded(m4b.file.path)
    assert samples.size / rate == pytest.approx(m4b.duration_seconds, abs=0.1)
    assert integrated_loudness(samples, rate) == pytest.approx(-16.0, abs=1.0)

    wav = exported(project, member, fmt="wav")
    samples, rate = decoded(wav.file.path)
    assert rate == 44_100
    assert samples.size / rate == pytest.approx(wav.duration_seconds, abs=0.002)
    wav_loudness = integrated_loudness(samples, rate)
    print(f"WAV export: integrated loudness {wav_loudness:.2f} LUFS")
    assert wav_loudness == pytest.approx(-16.0, abs=1.0)
    assert [c["start_s"] for c in wav.report["chapters"]] == pytest.approx(
        [c["start_s"] for c in marks], abs=0.01
    )

    zipped = exported(project, member, fmt="zip")
    with zipfile.ZipFile(zipped.file.path) as archive:
        names = archive.namelist()
        assert names == ["01 - The harbour.mp3", "02 - The hill.mp3"]
        for name, entry in zip(names, zipped.report["chapters"], strict=True):
            assert entry["file"] == name and entry["start_s"] == 0
            with archive.open(name) as member_file:
                one, rate = decoded(member_file)
            assert one.size / rate == pytest.approx(entry["end_s"], abs=0.1)
            assert integrated_loudness(one, rate) == pytest.approx(-16.0, abs=1.0)
    assert zipped.duration_seconds == pytest.approx(
        sum(c["end_s"] for c in zipped.report["chapters"]), abs=0.01
    )

    chapter = exported(project, member, chapter=hill)
    assert chapter.chapter == hill and chapter.file.name.endswith("harbour-tales-the-hill.mp3")
    id3 = ID3(chapter.file.path)
    assert id3["TIT2"].text == ["The hill"] and id3["TALB"].text == ["Harbour tales"]
    assert [f.sub_frames["TIT2"].text[0] for f in id3.getall("CHAP")] == ["The hill"]
    expected = sum(take_seconds(b) + PAUSE for b in blocks_of(hill))
    assert seconds_of(chapter.file.path) == pytest.approx(expected, abs=0.15)
    assert [b["block"] for b in chapter.report["chapters"][0]["blocks"]] == [
        b.public_id for b in blocks_of(hill)
    ]
    assert harbour.public_id not in str(chapter.report)


def test_the_audiobook_profile_meets_its_rules_and_says_so(project, member):
    rendered(project, member)
    export = exported(project, member, profile="audiobook", fmt="mp3")
    for entry in export.report["chapters"]:
        rules = {rule["rule"]: rule for rule in entry["compliance"]}
        assert set(rules) == {
            "RMS −23…−18 dB",
            "Peak ≤ −3 dB",
            "Noise floor ≤ −60 dB",
            "Duration ≤ 2 h",
        }, rules
        assert all(rule["passes"] for rule in rules.values()), rules
        assert -23 <= rules["RMS −23…−18 dB"]["value"] <= -18
        # ACX's room tone: 0.75 s before each chapter's first block, 2 s after its last.
        assert entry["blocks"][0]["start_s"] == pytest.approx(entry["start_s"] + 0.75, abs=0.01)
        assert entry["end_s"] - entry["blocks"][-1]["end_s"] == pytest.approx(2.0, abs=0.01)
    assert export.report["passes"] is True
    samples, rate = decoded(export.file.path)
    assert window_db(samples, rate, 0.0, 0.7) < -60
    rms, peak, floor = rms_db(samples), peak_db(samples), noise_floor_db(samples, rate)
    print(f"Audiobook export: RMS {rms:.2f} dB, peak {peak:.2f} dB, noise floor {floor:.2f} dB")
    assert -23 <= rms <= -18
    assert peak <= -3.0
    assert floor <= -60


# --- Cues -----------------------------------------------------------------------------------


def test_a_cue_after_a_block_is_heard_between_it_and_the_next_and_under_it_over_the_block(
    project, member
):
    rendered(project, member)
    harbour = chapters_of(project)[0]
    first, second, _ = blocks_of(harbour)
    # WAV: lossless and without encoder delay, so the exports line up sample for sample.
    base = exported(project, member, chapter=harbour, fmt="wav")
    plain, rate = decoded(base.file.path)
    blocks = {b["block"]: b for b in base.report["chapters"][0]["blocks"]}
    gap = (blocks[first.public_id]["end_s"] + 0.03, blocks[second.public_id]["start_s"] - 0.03)
    silence = window_db(plain, rate, *gap)
    assert silence < -70  # the pause after the first block is silent without a cue

    # Rain that outlasts the first block and its pause, so "under" fills that pause too.
    first_row = blocks[first.public_id]
    length = round(first_row["end_s"] - first_row["start_s"] + PAUSE + 1.0, 1)
    rain = sound_clip(project.workspace, member, length)
    cue = Cue.objects.create(
        workspace=project.workspace,
        project=project,
        kind="sound",
        prompt="steady rain on a tin roof",
        generation=rain,
        duration_seconds=rain.duration_seconds,
        block=first,
        placement="after",
        volume_db=-6,
    )
    after = exported(project, member, chapter=harbour, fmt="wav")
    mixed, rate = decoded(after.file.path)
    report = after.report["chapters"][0]
    (placed,) = report["cues"]
    assert placed["cue"] == cue.pk and placed["placement"] == "after"
    assert placed["generation"] == rain.history_item_id and placed["recipe"] == rain.recipe
    moved = {b["block"]: b for b in report["blocks"]}
    assert placed["start_s"] == pytest.approx(moved[first.public_id]["end_s"] + PAUSE, abs=0.01)
    assert placed["end_s"] - placed["start_s"] == pytest.approx(length, abs=0.05)
    # Later blocks move on by the cue and its pause; the cue's window is loud.
    shift = moved[second.public_id]["start_s"] - blocks[second.public_id]["start_s"]
    assert shift == pytest.approx(length + PAUSE, abs=0.05)
    assert mixed.size / rate == pytest.approx(plain.size / rate + length + PAUSE, abs=0.1)
    heard = window_db(mixed, rate, placed["start_s"] + 0.1, placed["end_s"] - 0.1)
    print(f"Cue after: {heard:.1f} dB in its window, {silence:.1f} dB there without it")
    assert heard > -45 and heard > silence + 30

    cue.placement = "under"
    cue.save(update_fields=["placement"])
    under = exported(project, member, chapter=harbour, fmt="wav")
    mixed, rate = decoded(under.file.path)
    report = under.report["chapters"][0]
    (placed,) = report["cues"]
    kept = {b["block"]: b for b in report["blocks"]}
    # Nothing moves; the cue starts with its block and sounds on past it, into the pause.
    assert mixed.size / rate == pytest.approx(plain.size / rate, abs=0.05)
    for key, row in kept.items():
        assert row["start_s"] == pytest.approx(blocks[key]["start_s"], abs=0.01)
    assert placed["start_s"] == pytest.approx(kept[first.public_id]["start_s"], abs=0.01)
    assert placed["end_s"] == pytest.approx(placed["start_s"] + length, abs=0.05)
    assert placed["end_s"] > kept[second.public_id]["start_s"]
    filled = window_db(mixed, rate, *gap)
    print(f"Cue under: {filled:.1f} dB in the pause after the block, {silence:.1f} dB without it")
    assert filled > -45 and filled > silence + 30
    # Under the block itself: take away the block as it sounds without the cue (scaled by
    # the best fit, since the chapter is normalised again); what is left is the cue.
    start, end = kept[first.public_id]["start_s"], kept[first.public_id]["end_s"]
    window = slice(int(start * rate), int(end * rate))
    speech, both = plain[window].astype(np.float64), mixed[window].astype(np.float64)
    scale = float(np.dot(both, speech) / np.dot(speech, speech))
    left = rms_db((both - scale * speech).astype(np.float32))
    print(f"Cue under: {left:.1f} dB left under the block once its speech is taken away")
    assert left > -40 and left > rms_db(both.astype(np.float32)) - 12
    # The control: with the cue gone, the same measure leaves (next to) nothing.
    cue.delete()
    again, _ = decoded(exported(project, member, chapter=harbour, fmt="wav").file.path)
    alone = again[window].astype(np.float64)
    scale = float(np.dot(alone, speech) / np.dot(speech, speech))
    control = rms_db((alone - scale * speech).astype(np.float32))
    print(f"Cue under: {control:.1f} dB left with no cue")
    assert control < left - 30


# --- Refusals -------------------------------------------------------------------------------


def test_an_export_is_refused_while_blocks_have_no_take_and_names_them(project, member):
    harbour, hill = chapters_of(project)
    with pytest.raises(narration.ProjectRefused) as refused:
        exports.export_start(workspace=project.workspace, user=member, project=project)
    assert str(refused.value) == (
        "Chapter 1 “The harbour” has 3 blocks without a take (blocks 1, 2 and 3): render them "
        "first. Chapter 2 “The hill” has 2 blocks without a take (blocks 1 and 2): render them "
        "first."
    )
    rendered(project, member, scope=RenderScope.BLOCK, target=blocks_of(harbour)[1])
    with pytest.raises(
        narration.ProjectRefused, match=r"has 2 blocks without a take \(blocks 1 and 3\)"
    ):
        exports.export_start(workspace=project.workspace, user=member, project=project)
    rendered(project, member, scope=RenderScope.CHAPTER, target=hill)
    # The chapter that is ready exports; the one that is not is still refused.
    exports.export_start(workspace=project.workspace, user=member, project=project, chapter=hill)
    with pytest.raises(narration.ProjectRefused, match="Chapter 1 “The harbour” has 2 blocks"):
        exports.export_start(
            workspace=project.workspace, user=member, project=project, chapter=harbour
        )
    empty = narration.chapter_add(project=project, name="Afterword")
    assert not empty.blocks.exists()
    with pytest.raises(narration.ProjectRefused, match="Nothing to export: chapter “Afterword”"):
        exports.export_start(
            workspace=project.workspace, user=member, project=project, chapter=empty
        )
    with pytest.raises(narration.ProjectRefused, match="Format: choose MP3, WAV, M4B"):
        exports.export_start(
            workspace=project.workspace, user=member, project=project, chapter=hill, fmt="ogg"
        )
    with pytest.raises(narration.ProjectRefused, match="Loudness: choose"):
        exports.export_start(
            workspace=project.workspace, user=member, project=project, chapter=hill, profile="x"
        )
    assert Export.objects.filter(project=project).count() == 1
    assert Job.objects.filter(kind="project_export").count() == 1


def test_a_cancelled_export_keeps_no_file(project, member, settings):
    rendered(project, member)
    scratch_before = set(Path(tempfile.gettempdir()).glob("chorus-export-*"))
    for stop_at in ("Chapter 2 of 2", "Keeping the file", "Done"):
        export = exports.export_start(workspace=project.workspace, user=member, project=project)
        seen = []

        def progress(percent, message="", stop_at=stop_at, seen=seen):
            seen.append(message)
            if message.startswith(stop_at):
                raise JobCancelled()

        with pytest.raises(JobCancelled):
            exports.export_run(job=export.job, progress=progress)
        assert any(m.startswith(stop_at) for m in seen)
        export.refresh_from_db()
        assert not export.file and export.finished_at is None and export.report == {}
    media = Path(settings.MEDIA_ROOT) / "projects"
    assert not media.exists() or not [p for p in media.rglob("*") if p.is_file()]
    assert set(Path(tempfile.gettempdir()).glob("chorus-export-*")) == scratch_before


# --- Snapshots ------------------------------------------------------------------------------


def test_a_convert_with_a_snapshot_leaves_an_mp3_export_of_the_project(project, member):
    render = narration.render_request(
        workspace=project.workspace,
        user=member,
        membership=Membership.objects.get(workspace=project.workspace, user=member),
        project=project,
        scope=RenderScope.PROJECT,
        draft=True,
        source="api",
    )
    render.snapshot = True
    render.save(update_fields=["snapshot"])
    job = run_job(render.job)
    assert job.status == JobStatus.SUCCEEDED, job.error
    (snapshot,) = Export.objects.filter(project=project)
    assert snapshot.format == "mp3" and snapshot.profile == "lufs16"
    assert snapshot.job_id == render.job_id and snapshot.chapter is None
    assert re.fullmatch(r"Harbour tales \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", snapshot.name)
    samples, rate = decoded(snapshot.file.path)
    assert samples.size / rate == pytest.approx(snapshot.duration_seconds, abs=0.1)
    assert integrated_loudness(samples, rate) == pytest.approx(-16.0, abs=1.0)
    assert [c["title"] for c in snapshot.report["chapters"]] == ["The harbour", "The hill"]

    # A chapter's convert: a snapshot of that chapter only, made inside the render's job.
    hill = chapters_of(project)[1]
    chapter_render = Render.objects.create(
        workspace=project.workspace,
        project=project,
        scope=RenderScope.CHAPTER,
        scope_id=hill.public_id,
        draft=True,
        state=RenderState.QUEUED,
        requested_by=member,
        snapshot=True,
    )
    steps = []
    made = exports.snapshot_make(
        render=chapter_render, progress=lambda p, m="": steps.append((p, m))
    )
    assert made.chapter == hill and made.format == "mp3" and made.file
    assert steps and all(p == 99 and m.startswith("Snapshot: ") for p, m in steps)
    id3 = ID3(made.file.path)
    assert [f.sub_frames["TIT2"].text[0] for f in id3.getall("CHAP")] == ["The hill"]
    assert Export.objects.filter(project=project).count() == 2
