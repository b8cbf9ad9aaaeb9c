"""`python -m freedompay_async.contrib.arq enqueue INPUT.csv`: the `enqueue` command."""

from __future__ import annotations

import sys

from freedompay_async.contrib.arq import main

sys.exit(main())
