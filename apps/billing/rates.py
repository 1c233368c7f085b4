"""Default credit rates per capability and model, from the seed developer guide.

Owners can override any rate per workspace (``RateCard`` rows); these are the defaults and
what the rate-card page documents. The local engine costs 0 credits (its usage is still
recorded: free drafts are a feature).

Sources (../shared/seed/elevenlabs-api-developer-guide.txt): TTS is 1 credit per character
for the standard models (Creator plan: $22 for 100,000 credits); Eleven v3 costs "~1.5–2x"
(2 is used, so budgets err on the safe side); Scribe v2 Realtime is $0.28 per hour, which
at the Creator price per credit ($0.00022) is 1,273 credits an hour. The guide gives no
figures for batch STT, sound effects, music, dubbing or voice design: the defaults below
are Chorus's own estimates, marked as such on the page, to be edited to the contract.

Voice agents (``agent``): a conversation is one ledger row whose units are credits, the sum of
its parts each priced by its own rate (``agent``/``stt``, ``agent``/``tts``, ``agent``/``llm``,
which owners may override like any rate): STT seconds at the live STT rate, TTS characters at
the standard models' 1 credit per character (agents speak with Flash v2.5, a standard model),
LLM tokens at a Chorus estimate (the guide prices no LLM). ``apps.generation.conversation``.
"""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

CHARACTER, SECOND, MINUTE, HOUR, GENERATION = "character", "second", "minute", "hour", "generation"
LLM_TOKEN = "token"  # noqa: S105 (a unit: an LLM token, for voice agents)
CREDIT = "credit"  # a row whose units are credits already (a conversation: its parts summed)
UNITS = (CHARACTER, SECOND, MINUTE, HOUR, GENERATION, LLM_TOKEN)
UNIT_PRECISION = Decimal("0.001")  # the ledger keeps units to three decimals


def units_for(unit: str, *, seconds: float = 0.0, characters: int = 0, tokens: int = 0) -> Decimal:
    """How many of ``unit`` a call of ``seconds`` of audio (from ``characters`` of text, or
    ``tokens`` of an LLM) uses; a call priced per generation is one."""
    amount = {
        SECOND: seconds,
        MINUTE: seconds / 60,
        HOUR: seconds / 3600,
        CHARACTER: characters,
        LLM_TOKEN: tokens,
    }.get(unit, 1)
    return Decimal(str(amount)).quantize(UNIT_PRECISION, ROUND_HALF_UP)


CAPABILITIES = {
    "tts": "Text to speech",
    "stt": "Speech to text (batch)",
    "stt_realtime": "Speech to text (live)",
    "voice_design": "Voice design",
    "voice_clone": "Voice clone",
    "sound_effect": "Sound effects",
    "music": "Music",
    "dubbing": "Dubbing",
    "agent": "Voice agents",
}


@dataclass(frozen=True)
class Rate:
    capability: str
    model_id: str  # "" = every model of the capability without a rate of its own
    unit: str
    credits_per_unit: Decimal
    source: str  # where the default comes from


DEFAULT_RATES: tuple[Rate, ...] = (
    Rate("tts", "", CHARACTER, Decimal("1"), "guide: 1 credit per character (standard models)"),
    Rate("tts", "eleven_v3", CHARACTER, Decimal("2"), "guide: Eleven v3 costs ~1.5–2x"),
    Rate("stt_realtime", "", HOUR, Decimal("1273"), "guide: $0.28/hour ÷ $0.00022/credit"),
    Rate("stt", "", MINUTE, Decimal("22"), "Chorus estimate (≈ the live rate)"),
    Rate("voice_design", "", GENERATION, Decimal("1000"), "Chorus estimate"),
    Rate("voice_clone", "", GENERATION, Decimal("0"), "Chorus estimate (clones are in the plan)"),
    Rate("sound_effect", "", GENERATION, Decimal("200"), "Chorus estimate"),
    Rate("music", "", MINUTE, Decimal("1000"), "Chorus estimate"),
    Rate("dubbing", "", MINUTE, Decimal("3000"), "Chorus estimate"),
    Rate("agent", "conversation", CREDIT, Decimal("1"), "the sum of its STT, TTS and LLM parts"),
    Rate("agent", "stt", HOUR, Decimal("1273"), "guide: as live STT ($0.28/hour)"),
    Rate("agent", "tts", CHARACTER, Decimal("1"), "guide: 1 credit per character (Flash v2.5)"),
    Rate("agent", "llm", LLM_TOKEN, Decimal("0.003"), "Chorus estimate (the guide prices no LLM)"),
)

# Plans of the seed guide: tier → (monthly credits, monthly price in USD).
PLANS = {
    "creator": (100_000, Decimal("22")),
    "pro": (500_000, Decimal("99")),
    "scale": (2_000_000, Decimal("330")),
    "business": (11_000_000, Decimal("1320")),
}


def price_per_credit(tier: str) -> Decimal:
    """USD per credit for a tier of the guide's table (Creator's price otherwise)."""
    credits, price = PLANS.get(tier.lower(), PLANS["creator"])
    return (price / credits).quantize(Decimal("0.0000001"))


def default_rate(capability: str, model_id: str = "") -> Rate:
    """The most specific default: the model's own rate, else the capability's."""
    fallback = None
    for rate in DEFAULT_RATES:
        if rate.capability == capability:
            if rate.model_id == model_id:
                return rate
            if rate.model_id == "":
                fallback = rate
    if fallback is None:
        raise ValueError(f"No rate for capability {capability!r}.")
    return fallback
