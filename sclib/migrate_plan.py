"""Moved to :mod:`sclib.migrate.plan`; this path goes away in the next release."""

from sclib._moved import alias

alias(__name__, "sclib.migrate.plan")
