"""The demos behind ``sclib demo``: :mod:`sclib.demo.core` (an embedded queue, a
few jobs, a worker; its ``handlers`` are what ``--handlers sclib.demo:handlers``
loads) and :mod:`sclib.demo.server` (``--server``: the whole system on one
machine, needs the ``server`` extra, imported only when run).
"""

from __future__ import annotations

from sclib.demo.core import handlers, run_demo

__all__ = ["handlers", "run_demo"]
