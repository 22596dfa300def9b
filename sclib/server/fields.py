"""Moved to :mod:`sclib.datasets.fields`; this path goes away in the next release."""

from sclib._moved import alias

alias(__name__, "sclib.datasets.fields")
