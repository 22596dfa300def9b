"""Print one of the README's two commands, exactly as README.md writes it.

    python3 .ci/readme_command.py run     # the "Run it" command
    python3 .ci/readme_command.py test    # the "Test it" command

CI runs what this prints, so the README cannot drift from what CI checks. A
command is the one line of a ```bash block under the paragraph whose bold lead
is **Run it** or **Test it**; anything else is an error (exit 2).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

LEADS = {"run": "**Run it**", "test": "**Test it**"}


def command(readme: str, which: str) -> str:
    lead = readme.find(LEADS[which])
    if lead < 0:
        raise SystemExit(f"README.md has no paragraph starting {LEADS[which]}")
    block = re.search(r"```bash\n(.*?)```", readme[lead:], re.DOTALL)
    if block is None:
        raise SystemExit(f"README.md has no ```bash block after {LEADS[which]}")
    lines = [ln for ln in block.group(1).splitlines() if ln.strip()]
    if len(lines) != 1:
        raise SystemExit(
            f"the ```bash block after {LEADS[which]} must hold one command line, "
            f"it holds {len(lines)}"
        )
    return lines[0]


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in LEADS:
        raise SystemExit("usage: readme_command.py run|test")
    root = Path(__file__).resolve().parents[1]
    print(command((root / "README.md").read_text(encoding="utf-8"), sys.argv[1]))
