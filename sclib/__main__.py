"""``python -m sclib`` runs the ``sclib`` command."""

from __future__ import annotations

import sys

from sclib.cli import main

sys.exit(main())
