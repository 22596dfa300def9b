"""Moved to :mod:`sclib.pipeline.upload`; this path goes away in the next release
(a worker runs ``--handlers sclib.pipeline:handlers_from_settings``)."""

from sclib._moved import alias

alias(__name__, "sclib.pipeline.upload")
