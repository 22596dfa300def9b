"""Moved to :mod:`sclib.demo.server`; this path goes away in the next release."""

from sclib._moved import alias

alias(__name__, "sclib.demo.server")
