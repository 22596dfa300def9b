"""Moved to :mod:`sclib.models.legacy`; this path goes away in the next release."""

from sclib._moved import alias

alias(__name__, "sclib.models.legacy")
