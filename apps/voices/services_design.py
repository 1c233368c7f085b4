"""Voice Design as team assets: generate previews from a recipe, keep it, reproduce, remix,
save a preview as a voice, and blind votes on a design's previews.

Generation runs the same service as ``POST /v1/text-to-voice/design`` with the member as the
caller (a ``Caller``): metered as theirs, source ui, with the design as its purpose, each
preview kept as a ``design_preview`` history item. The seed is chosen here when the member
leaves it empty, so every recipe names the seed it was made with and can be run again.
"""

import hashlib
import random
import re
import secrets
import uuid
from dataclasses import asdict, dataclass
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone

from apps.billing.rates import units_for
from apps.billing.services import Estimate, rate_for, usage_estimate
from apps.engines.base import DesignRequest
from apps.generation.caller import Caller
from apps.generation.engine import engine_for
from apps.generation.errors import ApiInvalid, ApiRefused
from apps.history.models import Generation
from apps.workspaces.services import ActionRefused

from .models import DesignBallot, DesignVote, LibraryVoice, Tag, VoiceChange, VoiceDesign
from .services import tag_add

DESCRIPTION_LENGTH = (20, 1000)
TEXT_LENGTH = (100, 1000)
DESIGN_MODELS = (
    ("eleven_multilingual_ttv_v2", "Multilingual v2"),
    ("eleven_ttv_v3", "Eleven v3"),
)
MAX_SEED = 2_147_483_647
# What the engine is asked for (the studio plays mp3) and the length a reservation assumes.
DESIGN_FORMAT = "mp3_44100_128"
ESTIMATED_PREVIEW_SECONDS = 30.0
RECIPE_FIELDS = (
    "description",
    "text",
    "auto_generate_text",
    "model_id",
    "guidance_scale",
    "loudness",
    "seed",
)


def refusal(exc: Exception) -> ActionRefused:
    """An API error of the shared services, as the studio shows it."""
    return ActionRefused(str(exc))


@dataclass(frozen=True)
class Recipe:
    """What a member asks Voice Design for; ``seed`` None means "pick one at random"."""

    description: str
    text: str = ""
    auto_generate_text: bool = False
    model_id: str = DESIGN_MODELS[0][0]
    guidance_scale: float = 5.0
    loudness: float = 0.5
    seed: int | None = None

    def checked(self) -> "Recipe":
        """The recipe trimmed, or ``ActionRefused`` naming what is wrong."""
        description = (self.description or "").strip()
        text = (self.text or "").strip()
        low, high = DESCRIPTION_LENGTH
        if not low <= len(description) <= high:
            raise ActionRefused(
                f"Describe the voice in {low} to {high} characters (you wrote {len(description)})."
            )
        if not self.auto_generate_text:
            tlow, thigh = TEXT_LENGTH
            if not tlow <= len(text) <= thigh:
                raise ActionRefused(
                    f"The preview text must be {tlow} to {thigh} characters (it has "
                    f"{len(text)}), or tick “write the preview text for me”."
                )
        if self.model_id not in dict(DESIGN_MODELS):
            raise ActionRefused("Choose one of the Voice Design models offered.")
        if not 0 <= self.guidance_scale <= 100:
            raise ActionRefused("Guidance scale goes from 0 to 100.")
        if not -1 <= self.loudness <= 1:
            raise ActionRefused("Loudness goes from −1 to 1.")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise ActionRefused(f"The seed is a whole number from 0 to {MAX_SEED:,}.")
        return Recipe(
            description=description,
            text="" if self.auto_generate_text else text,
            auto_generate_text=self.auto_generate_text,
            model_id=self.model_id,
            guidance_scale=float(self.guidance_scale),
            loudness=float(self.loudness),
            seed=self.seed,
        )

    @classmethod
    def of(cls, design: VoiceDesign) -> "Recipe":
        return cls(
            description=design.description,
            text="" if design.auto_generate_text else design.text,
            auto_generate_text=design.auto_generate_text,
            model_id=design.model_id,
            guidance_scale=design.guidance_scale,
            loudness=design.loudness,
            seed=design.seed,
        )


def design_estimate(*, workspace, user, model_id: str = DESIGN_MODELS[0][0]) -> Estimate:
    """What one generation (three previews) is reserved at, and what the member has left."""
    engine = engine_for(workspace)
    unit = rate_for(workspace, "voice_design", model_id, engine.name).unit
    return usage_estimate(
        workspace=workspace,
        user=user,
        capability="voice_design",
        engine=engine.name,
        model_id=model_id,
        units=units_for(unit, seconds=3 * ESTIMATED_PREVIEW_SECONDS),
    )


def design_generate(
    *,
    workspace,
    user,
    recipe: Recipe,
    parent: VoiceDesign | None = None,
    reproduces: VoiceDesign | None = None,
) -> VoiceDesign:
    """Three previews for ``recipe``, kept with the recipe as a ``VoiceDesign``.

    Nothing is kept when the engine or a budget refuses (the ledger refunds the reservation).
    A reproduction says whether every preview's audio is byte-identical to the original's.
    """
    from apps.generation.media import DesignInput, design

    recipe = recipe.checked()
    seed_was_random = recipe.seed is None
    seed = secrets.randbelow(MAX_SEED + 1) if seed_was_random else recipe.seed
    request = DesignRequest(
        voice_description=recipe.description,
        text=None if recipe.auto_generate_text else recipe.text,
        auto_generate_text=recipe.auto_generate_text,
        model_id=recipe.model_id,
        guidance_scale=recipe.guidance_scale,
        loudness=recipe.loudness,
        seed=seed,
        output_format=DESIGN_FORMAT,
    )
    uid = uuid.uuid4().hex
    caller = Caller(workspace=workspace, user=user, purpose=("voice_design", uid))
    try:
        result = design(caller=caller, design=DesignInput(request=request))
    except (ApiRefused, ApiInvalid) as exc:
        raise refusal(exc) from exc
    previews = [
        {
            "generated_voice_id": p.generated_voice_id,
            "history_item_id": p.history_item_id,
            "sha256": hashlib.sha256(p.audio).hexdigest(),
            "duration_secs": round(p.duration_secs, 3),
            "language": p.language,
        }
        for p in result.previews
    ]
    identical = None
    if reproduces is not None:
        before = [p.get("sha256") for p in reproduces.previews]
        identical = before == [p["sha256"] for p in previews]
    return VoiceDesign.objects.create(
        workspace=workspace,
        created_by=user,
        uid=uid,
        engine=engine_for(workspace).name,
        description=recipe.description,
        text=result.text,
        auto_generate_text=recipe.auto_generate_text,
        model_id=recipe.model_id,
        guidance_scale=recipe.guidance_scale,
        loudness=recipe.loudness,
        seed=seed,
        seed_was_random=seed_was_random,
        request=asdict(request),
        previews=previews,
        parent=parent,
        reproduces=reproduces,
        identical=identical,
        request_id=result.usage.request_id,
        credits=result.usage.credits,
    )


def design_reproduce(*, design: VoiceDesign, user) -> VoiceDesign:
    """Run a design's recipe again (same seed, same text) and compare the audio."""
    if design.engine != engine_for(design.workspace).name:
        raise ActionRefused(
            f"This design was made by the {design.engine} engine and the workspace now uses "
            f"the {engine_for(design.workspace).name} engine: the audio could not match."
        )
    return design_generate(
        workspace=design.workspace, user=user, recipe=Recipe.of(design), reproduces=design
    )


def design_previews(design: VoiceDesign) -> list[dict]:
    """Each preview with its letter and its stored clip (None if the clip was deleted)."""
    ids = [p.get("history_item_id") for p in design.previews]
    clips = {
        g.history_item_id: g
        for g in Generation.objects.filter(workspace=design.workspace, history_item_id__in=ids)
    }
    return [
        {**p, "letter": letter_of(index), "index": index, "clip": clips.get(p["history_item_id"])}
        for index, p in enumerate(design.previews)
    ]


def open_vote(design: VoiceDesign) -> DesignVote | None:
    """A blind vote still open on this design: its previews stay unnamed until it closes."""
    return design.votes.filter(closed_at__isnull=True).first()


def letter_of(index: int) -> str:
    return "ABCDEFGH"[index] if index < 8 else str(index + 1)


def designs_search(*, workspace, query: str = ""):
    """The workspace's designs, newest first, matching ``query`` in the description, the
    preview text, the seed or who made it."""
    designs = VoiceDesign.objects.filter(workspace=workspace).select_related("created_by")
    query = (query or "").strip()
    if query:
        match = (
            Q(description__icontains=query)
            | Q(text__icontains=query)
            | Q(created_by__email__icontains=query)
            | Q(created_by__name__icontains=query)
        )
        if re.fullmatch(r"[0-9]{1,18}", query):
            match |= Q(seed=int(query)) | Q(pk=int(query))
        designs = designs.filter(match)
    return designs.annotate(remix_count=Count("remixes", distinct=True)).order_by(
        "-created_at", "-pk"
    )


def design_lineage(design: VoiceDesign) -> tuple[list[VoiceDesign], list[VoiceDesign]]:
    """Its ancestors (oldest first, up to 20) and its direct remixes."""
    ancestors = []
    current = design.parent
    seen = {design.pk}
    while current is not None and current.pk not in seen and len(ancestors) < 20:
        ancestors.append(current)
        seen.add(current.pk)
        current = current.parent
    ancestors.reverse()
    return ancestors, list(design.remixes.select_related("created_by"))


def recipe_differences(a: VoiceDesign, b: VoiceDesign) -> list[tuple[str, object, object, bool]]:
    """Each recipe field of two designs side by side: (field, a, b, differs)."""
    rows = []
    for name in (*RECIPE_FIELDS, "engine"):
        left, right = getattr(a, name), getattr(b, name)
        rows.append((name, left, right, left != right))
    return rows


RECIPE_TITLES = {
    "description": "Description",
    "text": "Preview text",
    "auto_generate_text": "Preview text written by the engine",
    "model_id": "Model",
    "guidance_scale": "Guidance",
    "loudness": "Loudness",
    "seed": "Seed",
    "engine": "Engine",
}


def recipe_value_text(name: str, value) -> str:
    """A recipe value as the compare page shows it: words, not codes or Python values."""
    from studio_site.format import label_of, number_of

    if isinstance(value, bool):
        return "Yes" if value else "No"
    if name in ("model_id", "engine"):
        return label_of(value)
    if name in ("guidance_scale", "loudness"):
        return number_of(value)
    return "" if value is None else str(value)


def recipe_rows(a: VoiceDesign, b: VoiceDesign) -> list[tuple[str, str, str, bool]]:
    """``recipe_differences`` for people: (title, a's value, b's value, differs)."""
    rows = []
    for name, left, right, differs in recipe_differences(a, b):
        text_a, text_b = recipe_value_text(name, left), recipe_value_text(name, right)
        rows.append((RECIPE_TITLES[name], text_a, text_b, differs))
    return rows


# --- Saving a preview as a voice ------------------------------------------------------------


def design_save(
    *,
    design: VoiceDesign,
    preview: int,
    user,
    name: str,
    description: str = "",
    labels: dict[str, str] | None = None,
    tags: list[str] | None = None,
    can_manage_tags: bool = False,
) -> LibraryVoice:
    """Make preview ``preview`` of ``design`` a voice of the workspace: in the library, in
    ``/v1/voices`` and usable by its id in TTS. Not metered (the preview was paid for)."""
    from .services_made import voice_design_save

    name = (name or "").strip()
    if not name:
        raise ActionRefused("Give the voice a name.")
    if len(name) > 100:
        raise ActionRefused("A voice name has at most 100 characters.")
    if not 0 <= preview < len(design.previews):
        raise ActionRefused("Choose one of the design's previews.")
    description = (description or "").strip() or design.description
    low, high = DESCRIPTION_LENGTH
    if not low <= len(description) <= high:
        raise ActionRefused(f"The voice description must be {low} to {high} characters.")
    labels = {k: v.strip()[:60] for k, v in (labels or {}).items() if v and v.strip()}
    tags = [t.strip() for t in tags or [] if t.strip()]
    if tags and not can_manage_tags:
        known = set(Tag.objects.filter(workspace=design.workspace).values_list("name", flat=True))
        unknown = [t for t in tags if t not in known]
        if unknown:
            raise ActionRefused(
                f"Only managers create tags; {', '.join(unknown)} "
                f"{'is' if len(unknown) == 1 else 'are'} not a tag of the team yet."
            )
    caller = Caller(workspace=design.workspace, user=user)
    try:
        voice = voice_design_save(
            caller=caller,
            generated_voice_id=design.previews[preview]["generated_voice_id"],
            voice_name=name,
            voice_description=description,
            labels=labels,
        )
    except (ApiRefused, ApiInvalid) as exc:
        raise refusal(exc) from exc
    library_voice = LibraryVoice.objects.get(
        workspace=design.workspace, engine=voice.engine, voice_id=voice.voice_id
    )
    library_voice.design = design
    library_voice.design_preview = preview
    clip = Generation.objects.filter(
        workspace=design.workspace, history_item_id=design.previews[preview]["history_item_id"]
    ).first()
    if clip is not None and not library_voice.preview_url:  # the preview it was saved from
        library_voice.preview_url = reverse("history:audio", args=[clip.pk])
    library_voice.save(update_fields=["design", "design_preview", "preview_url"])
    VoiceChange.objects.create(
        voice=library_voice,
        actor=user,
        action="designed",
        detail=f"Saved from design #{design.pk}, preview {letter_of(preview)} (seed {design.seed})",
    )
    for tag in tags:
        tag_add(voice=library_voice, name=tag, actor=user)
    return library_voice


# --- Blind votes ----------------------------------------------------------------------------


def vote_open(*, design: VoiceDesign, user, question: str = "") -> DesignVote:
    if len(design.previews) < 2:
        raise ActionRefused("A vote needs at least two previews.")
    question = (question or "").strip() or "Which preview fits best?"
    if len(question) > 200:
        raise ActionRefused("The question has at most 200 characters.")
    return DesignVote.objects.create(
        design=design,
        workspace=design.workspace,
        question=question,
        secret=secrets.token_hex(16),
        opened_by=user,
    )


def vote_order(vote: DesignVote, user) -> list[int]:
    """The order this voter hears the previews in: shuffled per voter, stable for them."""
    order = list(range(len(vote.design.previews)))
    random.Random(f"{vote.secret}:{user.pk}").shuffle(order)
    return order


def vote_preview_at(vote: DesignVote, user, slot: int) -> int:
    """The preview index behind option ``slot`` (1-based) of this voter's page."""
    order = vote_order(vote, user)
    if not 1 <= slot <= len(order):
        raise ActionRefused(f"Pick one of the options 1 to {len(order)}.")
    return order[slot - 1]


def vote_cast(*, vote: DesignVote, user, slot: int) -> DesignBallot:
    """Record (or change) a voter's pick while the vote is open."""
    preview = vote_preview_at(vote, user, slot)
    try:
        with transaction.atomic():
            # Under the vote's lock: a ballot never lands after the vote closed.
            closed = (
                DesignVote.objects.select_for_update()
                .filter(pk=vote.pk)
                .values_list("closed_at", flat=True)
                .first()
            )
            if closed is not None:
                raise ActionRefused("This vote has closed.")
            ballot, _ = DesignBallot.objects.update_or_create(
                vote=vote, voter=user, defaults={"preview": preview}
            )
    except IntegrityError as exc:  # two tabs voting at once: the other one won
        raise ActionRefused("Your vote was just recorded from another tab.") from exc
    return ballot


def vote_close(*, vote: DesignVote, user, can_manage: bool) -> DesignVote:
    if not vote.is_open:
        raise ActionRefused("This vote is already closed.")
    if vote.opened_by_id != user.pk and not can_manage:
        raise ActionRefused("Only whoever opened the vote, or a manager, can close it.")
    with transaction.atomic():
        now = timezone.now()
        closed = (
            DesignVote.objects.select_for_update()
            .filter(pk=vote.pk, closed_at__isnull=True)
            .update(closed_at=now)
        )
    if not closed:
        raise ActionRefused("This vote is already closed.")
    vote.closed_at = now
    return vote


@dataclass(frozen=True)
class VoteResult:
    letter: str
    index: int
    votes: int
    share: Decimal
    winner: bool


def vote_results(vote: DesignVote) -> list[VoteResult]:
    """Votes per preview (by letter); only once the vote has closed."""
    if vote.is_open:
        raise ActionRefused("Results appear when the vote closes.")
    counts = dict(
        vote.ballots.values_list("preview").annotate(n=Count("pk")).values_list("preview", "n")
    )
    total = sum(counts.values())
    best = max(counts.values(), default=0)
    return [
        VoteResult(
            letter=letter_of(index),
            index=index,
            votes=counts.get(index, 0),
            share=(Decimal(100 * counts.get(index, 0)) / total).quantize(Decimal("1"))
            if total
            else Decimal(0),
            winner=best > 0 and counts.get(index, 0) == best,
        )
        for index in range(len(vote.design.previews))
    ]
