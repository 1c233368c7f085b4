"""Fill the spend rollups from the ledger: rows settled before 0003 (and before 0004 for
``SpendDay``) are in neither, and the explorer reads only the rollups.

Runs ``billing.rollup.rollup_rebuild`` itself (today's code and models, not the historical
ones): the rebuild is hand-written SQL over the columns this migration's state has, and a
deployment runs it once. Reversing leaves the tables as they are (0004's reverse drops
``SpendDay``; ``SpendRollup`` stays rebuildable by ``manage.py spend_rollup_rebuild``).
"""

from django.db import migrations


def fill(apps, schema_editor):
    from apps.billing.rollup import rollup_rebuild

    if schema_editor.connection.alias != "default":
        return
    # A new database has nothing to sum (and its later migrations may add columns today's
    # SQL names): only a ledger with settled rows is rebuilt.
    ledger = apps.get_model("billing", "UsageEvent")
    if ledger.objects.filter(status="settled").exists():
        rollup_rebuild()


class Migration(migrations.Migration):
    dependencies = [("billing", "0004_spend_day")]

    operations = [migrations.RunPython(fill, migrations.RunPython.noop)]
