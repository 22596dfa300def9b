"""Moved to :mod:`sclib.models.dataset`; this path goes away in the next release
(the names stay importable from :mod:`sclib.datasets`)."""

from sclib._moved import alias

alias(__name__, "sclib.models.dataset")
