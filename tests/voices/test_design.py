"""Voice Design as team assets: generate (metered, recipe kept), reproduce, remix lineage,
compare, history search, save a preview as a voice; bad input refused with nothing kept."""

import base64
import io
import json
from dataclasses import asdict
from decimal import Decimal

import av
import httpx
import pytest
from django.urls import reverse

from apps.billing.models import Budget, UsageEvent, UsageSource, UsageStatus
from apps.engines.base import DesignRequest
from apps.history.models import Generation, GenerationKind
from apps.voices import services_design
from apps.voices.models import LibraryVoice, VoiceDesign, VoiceSource
from apps.workspaces.services import ActionRefused
from tests.conftest import HTMX
from tests.engines.test_elevenlabs_client import Script

DESCRIPTION = "A calm middle-aged woman with a warm, low voice and a slight Scottish accent."
TEXT = (
    "Good evening, and welcome to the late show. Tonight we have a story about a lighthouse, "
    "a storm and a very patient cat."
)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def form(**changes):
    data = {
        "description": DESCRIPTION,
        "text": TEXT,
        "model_id": "eleven_multilingual_ttv_v2",
        "guidance_scale": "5",
        "loudness": "0.5",
        "seed": "",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def seconds_of(audio: bytes) -> float:
    with av.open(io.BytesIO(audio)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


def recipe(**changes) -> services_design.Recipe:
    values = {"description": DESCRIPTION, "text": TEXT, "seed": 1234}
    values.update(changes)
    return services_design.Recipe(**values)


# --- Generate -------------------------------------------------------------------------------


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_generate_keeps_the_recipe_the_seed_and_three_playable_previews(
    client_as, member, workspace, htmx
):
    client = client_as(member, **(HTMX if htmx else {}))
    response = client.post(reverse("voices:design_new"), form())
    design = VoiceDesign.objects.get()
    target = reverse("voices:design", args=[design.pk])
    if htmx:
        assert response.status_code == 200 and response["HX-Redirect"] == target
    else:
        assert response.status_code == 303 and response["Location"] == target
    # Empty seed: one chosen at random, kept and shown.
    assert design.seed_was_random and 0 <= design.seed <= services_design.MAX_SEED
    assert (design.created_by, design.engine, design.description) == (member, "local", DESCRIPTION)
    assert design.request == {
        "voice_description": DESCRIPTION,
        "text": TEXT,
        "auto_generate_text": False,
        "model_id": "eleven_multilingual_ttv_v2",
        "guidance_scale": 5.0,
        "loudness": 0.5,
        "seed": design.seed,
        "output_format": services_design.DESIGN_FORMAT,
    }
    assert len(design.previews) == 3
    clips = Generation.objects.filter(kind=GenerationKind.DESIGN_PREVIEW).order_by("pk")
    assert [c.history_item_id for c in clips] == [p["history_item_id"] for p in design.previews]
    for clip, preview in zip(clips, design.previews, strict=True):
        audio = clip.file.read()
        assert seconds_of(audio) == pytest.approx(preview["duration_secs"], abs=0.1)
        assert preview["duration_secs"] > 3  # the preview text, spoken
        assert clip.source == UsageSource.UI and clip.user == member
    [event] = UsageEvent.objects.all()
    assert (event.status, event.source, event.capability, event.user) == (
        UsageStatus.SETTLED, UsageSource.UI, "voice_design", member,
    )  # fmt: skip
    assert (event.purpose_type, event.purpose_id) == ("voice_design", design.uid)
    assert design.request_id == event.request_id and design.credits == event.credits
    page = client_as(member).get(target).text
    assert str(design.seed) in page and "Preview A" in page and "Preview C" in page
    for clip in clips:
        assert reverse("history:audio", args=[clip.pk]) in page


def test_the_same_recipe_and_seed_give_identical_audio_and_reproduce_says_so(
    client_as, member, workspace
):
    first = services_design.design_generate(workspace=workspace, user=member, recipe=recipe())
    assert not first.seed_was_random and first.seed == 1234
    response = client_as(member).post(reverse("voices:design_reproduce", args=[first.pk]))
    again = VoiceDesign.objects.exclude(pk=first.pk).get()
    assert response.status_code == 303
    assert response["Location"] == reverse("voices:design", args=[again.pk])
    assert again.reproduces == first and again.identical is True
    assert [p["sha256"] for p in again.previews] == [p["sha256"] for p in first.previews]
    audio = [
        Generation.objects.get(history_item_id=p["history_item_id"]).file.read()
        for d in (first, again)
        for p in d.previews
    ]
    assert audio[:3] == audio[3:]
    assert again.request == first.request
    page = client_as(member).get(reverse("voices:design", args=[again.pk])).text
    assert "Identical" in page and f"design #{first.pk}" in page


def test_reproduce_reports_audio_that_differs(client_as, member, workspace):
    first = services_design.design_generate(workspace=workspace, user=member, recipe=recipe())
    first.previews[1]["sha256"] = "0" * 64  # as if the engine had answered differently then
    first.save()
    again = services_design.design_reproduce(design=first, user=member)
    assert again.identical is False
    page = client_as(member).get(reverse("voices:design", args=[again.pk])).text
    assert "Differs" in page


def test_a_different_seed_gives_different_audio(member, workspace):
    a = services_design.design_generate(workspace=workspace, user=member, recipe=recipe(seed=1))
    b = services_design.design_generate(workspace=workspace, user=member, recipe=recipe(seed=2))
    assert [p["sha256"] for p in a.previews] != [p["sha256"] for p in b.previews]


def test_auto_generated_text_is_kept_as_spoken(client_as, member, workspace):
    response = client_as(member).post(
        reverse("voices:design_new"), form(text="", auto_generate_text="on", seed="77")
    )
    assert response.status_code == 303
    design = VoiceDesign.objects.get()
    assert design.auto_generate_text and design.request["text"] is None
    assert len(design.text) >= 50  # the text the engine wrote, kept with the recipe


def test_the_recipe_stored_is_the_request_sent_to_the_engine(upstream, on_elevenlabs, member):
    """On the ElevenLabs engine, the body that leaves Chorus equals the stored request."""
    mp3 = base64.b64encode(b"\xff\xfb\x90\x00" * 100).decode()
    answer = httpx.Response(
        200,
        json={
            "previews": [
                {"audio_base_64": mp3, "generated_voice_id": f"gen-{i}", "media_type": "audio/mpeg",
                 "duration_secs": 2.5, "language": "en"}
                for i in range(3)
            ],
            "text": TEXT,
        },
        headers={"request-id": "up-9"},
    )  # fmt: skip
    script: Script = upstream(answer)
    design = services_design.design_generate(
        workspace=on_elevenlabs, user=member, recipe=recipe(seed=99, loudness=-0.25)
    )
    [sent] = script.requests
    assert sent.url.path == "/v1/text-to-voice/design"
    assert sent.url.params["output_format"] == design.request["output_format"]
    body = json.loads(sent.content)
    stored = {k: v for k, v in design.request.items() if k != "output_format"}
    assert body == stored
    assert asdict(DesignRequest(**design.request)) == design.request
    assert [p["generated_voice_id"] for p in design.previews] == ["gen-0", "gen-1", "gen-2"]


# --- Remix, lineage, compare, history -----------------------------------------------------------


def test_remix_starts_from_the_recipe_and_records_the_lineage(client_as, member, workspace):
    parent = services_design.design_generate(workspace=workspace, user=member, recipe=recipe())
    client = client_as(member)
    page = client.get(reverse("voices:design_new"), {"remix": parent.pk}).text
    assert DESCRIPTION in page and 'value="1234"' in page and f"design #{parent.pk}" in page
    response = client.post(
        reverse("voices:design_new"), form(loudness="-0.5", seed="1234", parent=str(parent.pk))
    )
    assert response.status_code == 303
    child = VoiceDesign.objects.exclude(pk=parent.pk).get()
    assert child.parent == parent and child.loudness == -0.5
    grandchild = services_design.design_generate(
        workspace=workspace, user=member, recipe=recipe(guidance_scale=20), parent=child
    )
    ancestors, remixes = services_design.design_lineage(child)
    assert ancestors == [parent] and remixes == [grandchild]
    page = client.get(reverse("voices:design", args=[grandchild.pk])).text
    assert f"#{parent.pk}" in page and f"#{child.pk}" in page
    page = client.get(reverse("voices:design", args=[parent.pk])).text
    assert "Remixed into" in page and f"#{child.pk}" in page


def test_compare_shows_two_recipes_side_by_side_with_differences(
    client_as, viewer, member, workspace
):
    a = services_design.design_generate(workspace=workspace, user=member, recipe=recipe())
    b = services_design.design_generate(
        workspace=workspace, user=member, recipe=recipe(loudness=-1)
    )
    response = client_as(viewer).get(reverse("voices:design_compare"), {"a": a.pk, "b": b.pk})
    assert response.status_code == 200
    rows = {name: differs for name, _l, _r, differs in services_design.recipe_differences(a, b)}
    assert rows["loudness"] and not rows["seed"] and not rows["description"]
    assert response.text.count("differs") >= 1 and "-1" in response.text
    # Rows are titled in words, values shown as people read them.
    for title in ("Preview text", "Guidance", "Loudness", "Model", "Engine"):
        assert f'<th scope="row">{title}' in response.text
    for raw in ("guidance_scale", "model_id", "auto_generate_text", "Auto_generate_text"):
        assert raw not in response.text
    assert "Multilingual v2 (voice design)" in response.text


def test_design_history_searches_description_text_and_seed(client_as, viewer, member, workspace):
    a = services_design.design_generate(workspace=workspace, user=member, recipe=recipe())
    bright = recipe(description="A bright young man, fast and energetic, for radio ads.", seed=5)
    b = services_design.design_generate(workspace=workspace, user=member, recipe=bright)
    client = client_as(viewer)
    url = reverse("voices:designs")
    found = client.get(url, {"q": "scottish"}).text
    assert f">#{a.pk}<" in found and f">#{b.pk}<" not in found
    found = client.get(url, {"q": "5"}, **HTMX).text  # a seed
    assert f">#{b.pk}<" in found and f">#{a.pk}<" not in found and "<html" not in found
    assert "No design matches" in client.get(url, {"q": "zzz"}).text
    assert "No designs yet" not in client.get(url).text


def test_an_empty_history_says_how_to_start(client_as, member, viewer):
    assert "Design the team's first voice" in client_as(member).get(reverse("voices:designs")).text
    assert "Design the team" not in client_as(viewer).get(reverse("voices:designs")).text


# --- Save a preview as a voice -------------------------------------------------------------------


def test_saving_a_preview_puts_the_voice_in_the_library_with_its_recipe(
    client_as, member, manager, workspace
):
    from apps.voices.models import Tag

    for name in ("narration", "warm"):  # the team's tags (members attach, managers create)
        Tag.objects.create(workspace=workspace, name=name)
    design = services_design.design_generate(workspace=workspace, user=member, recipe=recipe())
    response = client_as(member).post(
        reverse("voices:design_save", args=[design.pk]),
        {"preview": "1", "name": "Moira ✨", "description": "", "accent": "scottish",
         "gender": "female", "tags": "narration, warm"},
    )  # fmt: skip
    voice = LibraryVoice.objects.get(name="Moira ✨")
    assert response.status_code == 303
    assert response["Location"] == reverse("voices:detail", args=[voice.pk])
    assert (voice.source, voice.category, voice.design, voice.design_preview) == (
        VoiceSource.DESIGNED, "generated", design, 1,
    )  # fmt: skip
    assert (voice.accent, voice.gender) == ("scottish", "female")
    assert voice.description == DESCRIPTION  # the design's, when none is given
    assert sorted(voice.tags.values_list("name", flat=True)) == ["narration", "warm"]
    assert voice.voice_id != design.previews[1]["generated_voice_id"] or voice.voice_id
    page = client_as(manager).get(reverse("voices:detail", args=[voice.pk])).text
    assert "Recipe" in page and str(design.seed) in page and f"design #{design.pk}" in page
    library = client_as(manager).get(reverse("voices:library"), {"q": "Moira"}).text
    assert "Moira ✨" in library


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"preview": "1", "name": "  "}, "Give the voice a name"),
        ({"preview": "7", "name": "X"}, "Choose one of the design"),
        ({"preview": "x", "name": "X"}, "Choose one of the design"),
        ({"preview": "0", "name": "X" * 101}, "at most 100"),
        ({"preview": "0", "name": "X", "description": "too short"}, "20 to 1000"),
    ],
)
def test_saving_refuses_bad_input_with_a_message_and_keeps_nothing(
    client_as, member, workspace, data, message
):
    design = services_design.design_generate(workspace=workspace, user=member, recipe=recipe())
    response = client_as(member).post(reverse("voices:design_save", args=[design.pk]), data)
    assert response.status_code == 400 and message in response.text
    assert not LibraryVoice.objects.exists()


# --- Bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"description": "too short"}, "at least 20"),
        ({"description": "x" * 1001}, "at most 1000"),
        ({"description": None}, "required"),
        ({"text": "Only a few words."}, "at least 100"),
        ({"text": "x" * 1001}, "at most 1000"),
        ({"seed": "-1"}, "greater than or equal to 0"),
        ({"seed": "2147483648"}, "less than or equal to"),
        ({"seed": "abc"}, "whole number"),
        ({"guidance_scale": "101"}, "less than or equal to 100"),
        ({"loudness": "2"}, "less than or equal to 1"),
        ({"model_id": "eleven_v9"}, "Select a valid choice"),
    ],
)
def test_bad_design_input_is_a_400_with_a_message_and_nothing_kept(
    client_as, member, changes, message
):
    response = client_as(member).post(reverse("voices:design_new"), form(**changes))
    assert response.status_code == 400
    assert message in response.text
    assert not VoiceDesign.objects.exists()
    assert not Generation.objects.exists() and not UsageEvent.objects.exists()


def test_unicode_description_and_text_work(client_as, member):
    description = "Une voix française chaleureuse — calme, grave, un peu rauque ✨ 🎙️"
    text = "Bonjour à tous ! " * 7
    response = client_as(member).post(
        reverse("voices:design_new"), form(description=description, text=text, seed="3")
    )
    assert response.status_code == 303
    assert VoiceDesign.objects.get().description == description


def test_a_spent_budget_refuses_the_design_and_keeps_nothing(
    upstream,
    on_elevenlabs,
    client_as,
    member,
):
    """Voice design costs 1000 credits a generation on ElevenLabs; a 10-credit budget refuses
    it before the engine is called (the local engine is free, so this runs on ElevenLabs)."""
    script = upstream(httpx.Response(500))
    Budget.objects.create(workspace=on_elevenlabs, user=member, limit_credits=Decimal(10))
    response = client_as(member).post(reverse("voices:design_new"), form(seed="4"))
    assert response.status_code == 400
    assert "budget" in response.text.lower()
    assert script.requests == []
    assert not VoiceDesign.objects.exists() and not Generation.objects.exists()
    assert not UsageEvent.objects.exists()


def test_the_form_shows_the_estimate_before_generating(on_elevenlabs, client_as, member):
    Budget.objects.create(workspace=on_elevenlabs, user=member, limit_credits=Decimal(5000))
    page = client_as(member).get(reverse("voices:design_new")).text
    assert "Estimate: up to <strong>1,000 credits</strong>" in page
    assert "you have 5,000 credits left" in page
    design = VoiceDesign.objects.create(
        workspace=on_elevenlabs, uid="x", engine="elevenlabs", description=DESCRIPTION, text=TEXT,
        model_id="eleven_multilingual_ttv_v2", guidance_scale=5, loudness=0.5, seed=1,
        request={}, previews=[],
    )  # fmt: skip
    page = client_as(member).get(reverse("voices:design", args=[design.pk])).text
    assert "Reproduce: up to 1,000 credits" in page


def test_a_foreign_design_is_a_404_everywhere(client_as, owner, outsider, workspace):
    theirs = services_design.design_generate(
        workspace=outsider.memberships.first().workspace, user=outsider, recipe=recipe()
    )
    client = client_as(owner)
    assert client.get(reverse("voices:design", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("voices:design_new"), {"remix": theirs.pk}).status_code == 404
    for name in ("design_reproduce", "design_save", "vote_open"):
        assert client.post(reverse(f"voices:{name}", args=[theirs.pk])).status_code == 404
    assert client.post(reverse("voices:design_new"), form(parent=str(theirs.pk))).status_code == 404
    mine = services_design.design_generate(workspace=workspace, user=owner, recipe=recipe())
    compare = client.get(reverse("voices:design_compare"), {"a": mine.pk, "b": theirs.pk})
    assert compare.status_code == 404
    assert VoiceDesign.objects.filter(workspace=workspace).count() == 1


def test_the_recipe_check_names_the_problem():
    with pytest.raises(ActionRefused, match="you wrote 5"):
        recipe(description="short").checked()
    assert recipe(auto_generate_text=True, text="ignored").checked().text == ""


def test_members_attach_existing_tags_and_only_managers_create_new_ones(
    client_as, member, manager, workspace
):
    from apps.voices.models import Tag

    Tag.objects.create(workspace=workspace, name="narration")
    design = services_design.design_generate(workspace=workspace, user=member, recipe=recipe())
    url = reverse("voices:design_save", args=[design.pk])
    refused = client_as(member).post(url, {"preview": "0", "name": "A", "tags": "narration, new"})
    assert refused.status_code == 400 and "Only managers create tags; new is not" in refused.text
    assert not LibraryVoice.objects.exists()
    ok = client_as(member).post(url, {"preview": "0", "name": "A", "tags": "narration"})
    assert ok.status_code == 303
    assert list(LibraryVoice.objects.get().tags.values_list("name", flat=True)) == ["narration"]
    ok = client_as(manager).post(url, {"preview": "1", "name": "B", "tags": "brand-new"})
    assert ok.status_code == 303 and Tag.objects.filter(name="brand-new").exists()


def test_a_search_for_non_ascii_digits_is_not_a_500(client_as, viewer):
    response = client_as(viewer).get(reverse("voices:designs"), {"q": "²"})
    assert response.status_code == 200 and "No design matches" in response.text
