"""How audit entries read on the audit page: a plain sentence per action and human details,
never an action code, a JSON blob or ``None``."""

from dataclasses import dataclass

from studio_site.format import count_of, label_of

from .models import AuditEntry, Role

ROLE_WORDS = {r.value: r.label.lower() for r in Role}


@dataclass(frozen=True)
class AuditLine:
    sentence: str
    details: list[str]


def _role(code) -> str:
    return ROLE_WORDS.get(str(code), label_of(code).lower())


def _credits(value, *, none: str) -> str:
    if value in (None, ""):
        return none
    try:
        return count_of(value, "credit")
    except ArithmeticError:
        return str(value)


def _quoted(text) -> str:
    return f"“{text}”"


def _rate_target(target: str) -> str:
    capability, _, model = target.partition("/")
    words = label_of(capability)
    return words if model in ("", "*") else f"{words} ({model})"


def _sentence(e: AuditEntry, d: dict) -> tuple[str, list[str]]:  # noqa: C901, PLR0911, PLR0912
    t = e.target
    match e.action:
        case "workspace.created":
            return f"Created the workspace {_quoted(t)}", []
        case "workspace.renamed":
            return (
                (f"Renamed the workspace from {_quoted(d.get('from'))} to {_quoted(d.get('to'))}"),
                [],
            )
        case "workspace.exported":
            return "Exported the workspace", [f"File {t}"] if t else []
        case "member.role_changed":
            return (
                (f"Changed the role of {t} from {_role(d.get('from'))} to {_role(d.get('to'))}"),
                [],
            )
        case "member.role_restored":
            return f"Undid a role change: {t} is {_role(d.get('to'))} again", []
        case "member.removed":
            return f"Removed {t} from the workspace", []
        case "member.left":
            return "Left the workspace", []
        case "invitation.created":
            details = ["Replaced an earlier invitation"] if d.get("replaced") else []
            return f"Invited {t} as {_role(d.get('role'))}", details
        case "invitation.revoked":
            return f"Withdrew the invitation for {t}", []
        case "invitation.accepted":
            if d.get("already_member"):
                return "Accepted an invitation (was already a member)", []
            return f"Joined the workspace as {_role(d.get('role'))}", []
        case "api_key.created":
            scopes = d.get("scopes") or []
            details = [
                "All capabilities"
                if not scopes
                else "Capabilities: " + ", ".join(label_of(s) for s in scopes),
                _credits(d.get("cap"), none="No monthly cap")
                + (" a month" if d.get("cap") else ""),
            ]
            return f"Created the API key {t}", details
        case "api_key.revoked":
            owner = d.get("owner")
            return f"Revoked the API key {t}", [f"Owned by {owner}"] if owner else []
        case "engine.changed":
            details = []
            if d.get("key_removed"):
                details.append("The stored API key was removed")
            elif d.get("key_changed"):
                details.append("A new API key was stored")
            if d.get("base_url"):
                details.append(f"Base URL {d['base_url']}")
            if d.get("from") and d.get("from") != d.get("to"):
                return (
                    f"Changed the engine from {label_of(d.get('from'))} to {label_of(d.get('to'))}",
                    details,
                )
            return f"Saved the engine settings ({label_of(d.get('to') or t)})", details
        case "budget.changed":
            before = _credits(d.get("from"), none="no limit")
            after = _credits(d.get("to"), none="no limit")
            return f"Changed the budget of {t} from {before} to {after}", []
        case "plan.settings_changed":
            details = []
            if d.get("budget_period"):
                details.append(f"Budgets reset every {label_of(d['budget_period']).lower()}")
            details.append("Workspace cap: " + _credits(d.get("workspace_cap"), none="none"))
            if d.get("credit_limit") not in (None, ""):
                details.append("Plan credits: " + _credits(d.get("credit_limit"), none="none"))
            return "Changed the plan settings", details
        case "rate.changed":
            unit = d.get("unit") or "unit"
            price = _credits(d.get("credits_per_unit"), none="0 credits")
            return f"Set the rate of {_rate_target(t)} to {price} per {label_of(unit).lower()}", []
        case "rate.reset":
            return f"Reset the rate of {_rate_target(t)} to the default", []
        case "voices.require_approved":
            if t == "on":
                return "Final renders now need approved voices", []
            return "Final renders no longer need approved voices", []
    # An action this page has no sentence for yet: its words, and its details in words.
    details = [f"{label_of(k)}: {_value(v)}" for k, v in d.items() if v not in (None, "", [], {})]
    sentence = label_of(e.action.replace(".", " "))
    return (f"{sentence}: {t}" if t else sentence), details


def _value(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(label_of(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{label_of(k)} {_value(v)}" for k, v in value.items())
    return str(value)


def audit_line(entry: AuditEntry) -> AuditLine:
    """The entry as the audit page shows it: one sentence and a few human details."""
    data = entry.data if isinstance(entry.data, dict) else {}
    sentence, details = _sentence(entry, data)
    return AuditLine(sentence=sentence, details=details)
