"""tus 1.0 at ``/files/`` (the protocol module lands next)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
