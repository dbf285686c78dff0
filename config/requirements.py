"""Print requirements.txt for Heroku's Python buildpack: pyproject.toml's production dependencies, pinned.

``make requirements`` runs it; pip resolves ``.`` without installing anything (``--dry-run --report``), so the
pins are what a fresh install would get today, on the Python running this.
"""

from __future__ import annotations

import json
import subprocess
import sys

from config.settings import PROJECT_ROOT

HEADER = """\
# Heroku's Python buildpack installs this file. Made by `make requirements` from pyproject.toml's
# dependencies (not its extras: production has DATABASE_URL and needs no embedded PostgreSQL). Edit pyproject.toml.
"""


def pinned_requirements() -> list[str]:
    report = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed", "--report", "-", "."],
        cwd=PROJECT_ROOT, check=True, capture_output=True, text=True,
    )
    installs = json.loads(report.stdout)["install"]
    pins = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs}
    pins.pop("catalog", None)  # the app itself runs from the checkout
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


if __name__ == "__main__":
    sys.stdout.write(HEADER + "\n".join(pinned_requirements()) + "\n")
