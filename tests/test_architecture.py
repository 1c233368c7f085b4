"""The layers between the apps hold: the import contracts pass and no app imports the gateway."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contracts_between_the_apps_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_no_app_but_the_gateway_imports_it():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in (ROOT / "apps").rglob("*.py")
        if path.relative_to(ROOT / "apps").parts[0] != "gateway"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "apps.gateway" in line
    ]
    assert offenders == []
