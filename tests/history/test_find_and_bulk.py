"""History (issue 14): which voice made each clip, search and filters kept in the URL, design
previews grouped per design, "use these settings again", bulk download and bulk delete."""

import io
import zipfile
from datetime import datetime
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.billing import services as billing
from apps.billing.models import UsageEvent
from apps.history.models import Generation
from apps.history.services import generation_save
from apps.voices.models import LibraryVoice, VoiceDesign
from studio_site.format import count_of
from tests.conftest import HTMX
from tests.factories import make_workspace

from .test_pages import rows


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def make_clip(workspace, user, *, text="Hello there.", kind="tts", voice=("", ""), credits=None,
              event=None, recipe=None, audio=None):  # fmt: skip
    if credits is not None:
        with billing.metered(
            workspace=workspace, user=user, capability="tts", engine="elevenlabs", units=credits
        ) as meter:
            event = meter.settle(units=credits)
    return generation_save(
        workspace=workspace,
        user=user,
        kind=kind,
        engine="local",
        audio=audio or f"audio of {text}".encode(),
        content_type="audio/mpeg",
        recipe=recipe or {"text": text},
        voice_id=voice[0],
        voice_name=voice[1],
        text=text,
        duration_seconds=8.4,
        usage_event=event,
    )


def at(generation, year, month, day):
    moment = timezone.make_aware(datetime(year, month, day, 12, 0))
    Generation.objects.filter(pk=generation.pk).update(created_at=moment)


# --- The voice of each clip --------------------------------------------------------------


def test_each_clip_names_its_voice_linked_when_the_library_has_it(
    client_as, viewer, member, workspace
):
    rachel = LibraryVoice.objects.create(
        workspace=workspace, engine="local", voice_id="v-rachel", name="Rachel"
    )
    elsewhere = make_workspace("Elsewhere")
    LibraryVoice.objects.create(workspace=elsewhere, engine="local", voice_id="v-ghost", name="G")
    make_clip(workspace, member, text="In the library.", voice=("v-rachel", "Rachel"))
    make_clip(workspace, member, text="Not in ours.", voice=("v-ghost", "Ghost"))

    body = client_as(viewer).get(reverse("history:list")).content.decode()

    voice_page = reverse("voices:detail", args=[rachel.pk])
    assert f'Voice: <a href="{voice_page}" data-voice-link>Rachel</a>' in body
    assert "Voice: <span data-voice-name>Ghost</span>" in body  # named, but no page to open
    assert body.count("data-voice-link") == 1
    assert "0:08" in body and "8.4 s" not in body  # one duration format


# --- Search and filters --------------------------------------------------------------------


def test_search_finds_the_text_or_the_voice_name(client_as, member, workspace):
    make_clip(workspace, member, text="Welcome to the quarterly report.", voice=("v1", "Rachel"))
    make_clip(workspace, member, text="Goodbye for now.", voice=("v2", "Adam"))
    client = client_as(member)

    by_text = client.get(reverse("history:list"), {"q": "QUARTERLY"}).content.decode()
    assert rows(by_text) == 1 and "Welcome to the quarterly report." in by_text
    by_voice = client.get(reverse("history:list"), {"q": "adam"}).content.decode()
    assert rows(by_voice) == 1 and "Goodbye for now." in by_voice
    nothing = client.get(reverse("history:list"), {"q": "zebra"}).content.decode()
    assert rows(nothing) == 0 and "No clips match these filters" in nothing


def test_filters_by_kind_voice_member_and_date_range_combine(
    client_as, member, owner, viewer, workspace
):
    a = make_clip(workspace, member, text="Member in March", voice=("v1", "Rachel"))
    b = make_clip(workspace, owner, text="Owner in March", voice=("v1", "Rachel"))
    c = make_clip(workspace, member, text="Member in May", voice=("v2", "Adam"))
    d = make_clip(workspace, member, text="Music in March", kind="music")
    for clip in (a, b, d):
        at(clip, 2026, 3, 10)
    at(c, 2026, 5, 2)
    client = client_as(viewer)

    def found(**params):
        body = client.get(reverse("history:list"), params).content.decode()
        return sorted(t for t in ("Member in March", "Owner in March", "Member in May",
                                  "Music in March") if t in body)  # fmt: skip

    assert found(voice="v1") == ["Member in March", "Owner in March"]
    assert found(member=str(member.pk)) == ["Member in March", "Member in May", "Music in March"]
    assert found(kind="music") == ["Music in March"]
    assert found(date_from="2026-03-10", date_to="2026-03-10") == [
        "Member in March", "Music in March", "Owner in March",
    ]  # fmt: skip
    assert found(date_from="2026-04-01") == ["Member in May"]
    assert found(member=str(member.pk), voice="v1", date_to="2026-03-31") == ["Member in March"]
    # The menus offer the workspace's voices and members, by name.
    page = client.get(reverse("history:list")).content.decode()
    assert '<option value="v1">Rachel</option>' in page
    assert f'<option value="{member.pk}">Mia Member</option>' in page


def test_bad_filters_are_said_with_400_and_never_a_500(client_as, member, outsider, workspace):
    make_clip(workspace, member)
    client = client_as(member)
    backwards = client.get(
        reverse("history:list"), {"date_from": "2026-05-02", "date_to": "2026-05-01"}
    )
    assert (
        backwards.status_code == 400 and "The end date is before the start date." in backwards.text
    )
    not_a_date = client.get(reverse("history:list"), {"date_from": "yesterday"})
    assert not_a_date.status_code == 400 and "Enter a valid date." in not_a_date.text
    stranger = client.get(reverse("history:list"), {"member": str(outsider.pk)})
    assert stranger.status_code == 400 and rows(stranger.text) == 1  # not a member: no filter


def test_the_filters_stay_in_the_url_pages_and_the_address_bar(client_as, member, workspace):
    for n in range(27):
        make_clip(workspace, member, text=f"Take {n}", voice=("v1", "Rachel"))
    client = client_as(member)

    page = client.get(reverse("history:list"), {"q": "Take", "voice": "v1", "kind": ""}).text
    assert rows(page) == 25
    assert 'href="?q=Take&amp;voice=v1&amp;page=2"' in page  # the pager keeps the filters
    assert 'method="get" action="/history/"' in page and 'hx-push-url="true"' in page
    partial = client_as(member, **HTMX).get(
        reverse("history:list"), {"q": "Take", "voice": "v1", "kind": "", "member": "", "page": "2"}
    )
    assert partial.status_code == 200 and "<html" not in partial.text and rows(partial.text) == 2
    assert partial["HX-Push-Url"] == "/history/?q=Take&voice=v1&page=2"  # no empty filters


def test_a_job_s_link_shows_its_one_clip(client_as, member, workspace):
    wanted = make_clip(workspace, member, text="The music", kind="music")
    make_clip(workspace, member, text="Something else")
    body = client_as(member).get(reverse("history:list"), {"item": wanted.history_item_id}).text
    assert rows(body) == 1 and "The music" in body


# --- Design previews and "use these settings again" --------------------------------------


def design_previews(workspace, user, description="A calm narrator from Lisbon"):
    with billing.metered(
        workspace=workspace, user=user, capability="voice_design", engine="elevenlabs", units=30
    ) as meter:
        event = meter.settle(units=30)
    previews = [
        make_clip(
            workspace,
            user,
            kind="design_preview",
            text="Preview text.",
            event=event,
            voice=(f"gen-{i}", ""),
            recipe={"voice_description": description, "preview_index": i},
        )  # fmt: skip
        for i in (2, 0, 1)
    ]
    return event, previews


def test_design_previews_are_grouped_under_their_design(client_as, member, workspace):
    event, previews = design_previews(workspace, member)
    design = VoiceDesign.objects.create(
        workspace=workspace, uid="u1", engine="local", description="A calm narrator from Lisbon",
        text="Preview text.", model_id="m", guidance_scale=5, loudness=0.5, seed=1, request={},
        request_id=event.request_id,
    )  # fmt: skip
    _, others = design_previews(workspace, member, description="A gravelly pirate")
    make_clip(workspace, member, text="Plain speech")

    body = client_as(member).get(reverse("history:list")).content.decode()

    assert body.count("data-design-group=") == 2 and rows(body) == 7
    design_url = reverse("voices:design", args=[design.pk])
    assert f'<a href="{design_url}" data-design-link>A calm narrator from Lisbon</a>' in body
    assert "A gravelly pirate" in body  # made through /v1: no design page, named all the same
    group = body.split("data-design-link>A calm narrator")[1].split("data-design-group")[0]
    # In the design's order (A, B, C as its page names them), whatever order they were kept in.
    by_index = [previews[1], previews[2], previews[0]]  # made with preview_index 2, 0, 1
    spots = [group.index(f'data-history-item="{p.history_item_id}"') for p in by_index]
    assert spots == sorted(spots)
    assert group.index("Preview A") < group.index("Preview B") < group.index("Preview C")
    assert group.count(count_of(event.credits, "credit")) == 1  # one call, its cost said once
    assert f'href="{design_url}">Open the design</a>' in body


def test_every_speech_clip_offers_its_settings_again(client_as, member, workspace):
    spoken = make_clip(workspace, member, text="Say it again")
    music = make_clip(workspace, member, text="A tune", kind="music")
    body = client_as(member).get(reverse("history:list")).content.decode()
    speech = reverse("speech:page")
    assert f'href="{speech}?from={spoken.pk}" data-use-again>Use these settings again</a>' in body
    assert f"?from={music.pk}" not in body and body.count("data-use-again") == 1


# --- Bulk download ---------------------------------------------------------------------------


def test_bulk_download_zips_exactly_the_selected_clips(client_as, viewer, member, workspace):
    one = make_clip(workspace, member, text="One", voice=("v1", "Rachel"), audio=b"ONE" * 1000)
    two = make_clip(workspace, member, text="Two", kind="music", audio=b"TWO" * 1000)
    make_clip(workspace, member, text="Three", audio=b"THREE")

    response = client_as(viewer).post(reverse("history:bulk_download"), {"ids": [one.pk, two.pk]})

    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].startswith('attachment; filename="chorus-history-')
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    names = archive.namelist()
    assert len(names) == 2
    [first] = [n for n in names if one.history_item_id in n]
    [second] = [n for n in names if two.history_item_id in n]
    assert "-tts-rachel-" in first and first.endswith(".mp3") and "-music-" in second
    assert archive.read(first) == b"ONE" * 1000 and archive.read(second) == b"TWO" * 1000


def test_bulk_download_never_includes_another_workspace_s_clip(
    client_as, member, outsider, workspace
):
    ours = make_clip(workspace, member, text="Ours")
    theirs_ws = outsider.memberships.first().workspace
    theirs = make_clip(theirs_ws, outsider, text="Theirs")
    client = client_as(member)
    mixed = client.post(reverse("history:bulk_download"), {"ids": [ours.pk, theirs.pk]})
    assert mixed.status_code == 404
    assert (
        client_as(outsider).post(reverse("history:bulk_download"), {"ids": [ours.pk]}).status_code
        == 404
    )
    assert client.post(reverse("history:bulk_download"), {"ids": ["x"]}).status_code == 400
    assert client.get(reverse("history:bulk_download")).status_code == 405
    nothing = client.post(reverse("history:bulk_download"), {"q": "Ours"})
    assert nothing.status_code == 303 and nothing["Location"] == "/history/?q=Ours"


# --- Bulk delete -----------------------------------------------------------------------------


def test_bulk_delete_asks_first_then_deletes_and_the_ledger_keeps_every_row(
    client_as, member, workspace
):
    one = make_clip(workspace, member, text="One", credits=Decimal(12))
    two = make_clip(workspace, member, text="Two", credits=Decimal(8))
    keep = make_clip(workspace, member, text="Keep", credits=Decimal(1))
    files = [(g.file.storage, g.file.name) for g in (one, two)]
    ledger_before = list(UsageEvent.objects.order_by("pk").values_list("pk", "credits", "status"))
    used_before = billing.member_usage(workspace=workspace, user=member).used
    client = client_as(member)

    ask = client.post(reverse("history:bulk_delete"), {"ids": [one.pk, two.pk], "q": "o"})
    assert (
        ask.status_code == 200 and "Delete 2 clips?" in ask.text and "data-bulk-confirm" in ask.text
    )
    assert Generation.objects.count() == 3  # nothing gone before the confirmation

    done = client.post(
        reverse("history:bulk_delete"), {"ids": [one.pk, two.pk], "q": "o", "confirm": "1"}
    )
    assert done.status_code == 303 and done["Location"] == "/history/?q=o"
    assert list(Generation.objects.all()) == [keep]
    assert not any(storage.exists(name) for storage, name in files)
    ledger_after = list(UsageEvent.objects.order_by("pk").values_list("pk", "credits", "status"))
    assert ledger_after == ledger_before and len(ledger_after) == 3  # billing stays exact
    assert billing.member_usage(workspace=workspace, user=member).used == used_before == 21
    page = client.get(done["Location"]).text
    assert "2 clips deleted. What they cost stays in the usage ledger." in page


def test_a_member_bulk_deletes_only_their_own_and_foreign_ids_are_left(
    client_as, member, owner, outsider, workspace
):
    mine = make_clip(workspace, member, text="Mine")
    teammates = make_clip(workspace, owner, text="Owner's")
    theirs = make_clip(outsider.memberships.first().workspace, outsider, text="Theirs")
    ids = {"ids": [mine.pk, teammates.pk, theirs.pk]}

    ask = client_as(member).post(reverse("history:bulk_delete"), ids)
    assert "Delete 1 clip?" in ask.text and "1 clip made by teammates will be kept" in ask.text
    done = client_as(member).post(
        reverse("history:bulk_delete"), {**ids, "confirm": "1"}, follow=True
    )

    assert set(Generation.objects.values_list("pk", flat=True)) == {teammates.pk, theirs.pk}
    assert "1 of the selected clips are not in this workspace" in done.text
    assert "1 clip made by teammates was kept" in done.text


@pytest.mark.parametrize("who", ["viewer", "outsider"])
def test_viewers_cannot_bulk_delete_and_outsiders_reach_nothing(
    client_as, request, member, workspace, who
):
    clip = make_clip(workspace, member)
    user = request.getfixturevalue(who)
    response = client_as(user).post(
        reverse("history:bulk_delete"), {"ids": [clip.pk], "confirm": "1"}
    )
    if who == "viewer":
        assert response.status_code == 403
    else:  # their own workspace has no such clip: left alone, said so
        assert response.status_code == 303
    assert Generation.objects.filter(pk=clip.pk).exists()
    assert client_as(member).get(reverse("history:bulk_delete")).status_code == 405
    assert (
        client_as(member).post(reverse("history:bulk_delete"), {"ids": ["1; drop"]}).status_code
        == 400
    )
