from django.apps import AppConfig


def _project_work(workspace):
    """What the workspace's projects say about spend to come, for the billing forecast: the
    regeneration ratio's parts and the characters still without a final take, by model."""
    from django.db.models import F, Sum, Value
    from django.db.models.functions import Coalesce, Length, NullIf

    from apps.billing.forecast import ProjectWork

    from .models import Block, Take
    from .narration import regeneration

    ratio = regeneration(Take.objects.filter(workspace=workspace))
    remaining = (
        Block.objects.filter(workspace=workspace, locked=False)
        .exclude(chosen__draft=False)
        .values(
            model=Coalesce(NullIf("model_id", Value("")), F("chapter__project__default_model_id"))
        )
        .annotate(characters=Sum(Length("text")))
        .order_by("model")
    )
    return ProjectWork(
        final_takes=ratio.takes,
        final_blocks=ratio.blocks,
        characters={row["model"]: row["characters"] or 0 for row in remaining},
    )


def _project_names(workspace, public_ids):
    """Projects by public id → name, for the spend explorer (``apps.billing.labels``)."""
    from .models import Project

    rows = Project.objects.filter(workspace=workspace, public_id__in=public_ids)
    return dict(rows.values_list("public_id", "name"))


def _block_links(workspace, public_ids):
    """A ledger row paid for a block → the block on its chapter's page."""
    from django.urls import reverse

    from .models import Block

    rows = Block.objects.filter(workspace=workspace, public_id__in=public_ids).values_list(
        "public_id", "chapter__public_id", "chapter__project__public_id"
    )
    return {
        block: reverse("projects:chapter", args=[project, chapter]) + f"#block-{block}"
        for block, chapter, project in rows
    }


def _cue_links(workspace, pks):
    """A ledger row paid for a cue → the project's cues page."""
    from django.urls import reverse

    from .models import Cue

    ids = [int(pk) for pk in pks if pk.isascii() and pk.isdigit() and len(pk) <= 18]
    rows = Cue.objects.filter(workspace=workspace, pk__in=ids).values_list(
        "pk", "project__public_id"
    )
    return {str(pk): reverse("projects:cues", args=[project]) for pk, project in rows}


class ProjectsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "apps.projects"
    label = "projects"
    verbose_name = "Projects"

    def ready(self):
        from apps.billing.forecast import project_work_register

        project_work_register(_project_work)

        from apps.billing import labels

        labels.register_namer("project", _project_names)
        labels.register_purpose("project_block", _block_links)
        labels.register_purpose("project_cue", _cue_links)
