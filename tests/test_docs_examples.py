"""The documentation's runnable examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_the_quickstart_pays_against_the_emulator(tmp_path: Path) -> None:
    """The quickstart's first example, copied from docs/quickstart.md, pays and prints it."""
    text = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    example = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)[0]
    script = tmp_path / "quickstart.py"
    script.write_text(example, encoding="utf-8")
    result = subprocess.run(  # noqa: S603 - the test's own interpreter and file
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("paid 4990.00 KZT "), result.stdout
    assert result.stderr == ""
