"""Moved to :mod:`sclib.transfers.staging`; this path goes away in the next release."""

from sclib._moved import alias

alias(__name__, "sclib.transfers.staging")
