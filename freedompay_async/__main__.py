"""Run the command line as `python -m freedompay_async` (the same as `freedompay-async`)."""

from __future__ import annotations

from freedompay_async.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
