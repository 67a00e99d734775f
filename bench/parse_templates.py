"""The lint benchmark's baseline: a bare script that only parses every template under a folder with Jinja2.

``python bench/parse_templates.py TEMPLATES_DIR`` — run as a plain script (not ``-m``), so it imports nothing but
Jinja2: the floor for any tool that reads the same templates.
"""

import sys
from pathlib import Path

import jinja2


def main() -> None:
    folder = Path(sys.argv[1])
    environment = jinja2.Environment()  # noqa: S701 - parsed only, never rendered
    count = 0
    for path in sorted(folder.rglob("*.j2")):
        environment.parse(path.read_text(encoding="utf-8"), name=path.name)
        count += 1
    print(f"parsed {count} templates")


if __name__ == "__main__":
    main()
