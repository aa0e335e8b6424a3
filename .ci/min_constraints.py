"""Print a pip constraints file pinning each runtime dependency to its lowest admitted version.

The lower bounds in pyproject.toml are the single source: ``name>=X`` becomes ``name==X``,
so CI can prove that the oldest releases the pins admit really work (the runtime
dependencies, and the extras in ``EXTRAS``).
"""

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml").read_text())
#: extras the lowest-versions environment installs too (.ci/run): their lower bounds as well
EXTRAS = ("postgresql",)
specs = list(project["project"]["dependencies"])
for extra in EXTRAS:
    specs += project["project"]["optional-dependencies"][extra]
for spec in specs:
    requirement, _, marker = spec.partition(";")
    found = re.match(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*.*?>=\s*([^,\s]+)", requirement)
    if found:
        line = f"{found.group(1)}=={found.group(3)}"
        print(f"{line}; {marker.strip()}" if marker.strip() else line)
