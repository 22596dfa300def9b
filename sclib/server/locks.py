"""Moved to :mod:`sclib.transfers.locks`; this path goes away in the next release."""

from sclib._moved import alias

alias(__name__, "sclib.transfers.locks")
