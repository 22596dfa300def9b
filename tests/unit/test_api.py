"""The public surface: __all__, lazy extras, backend URLs, ids."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest

import sclib
from sclib import ConfigurationError, open_store
from sclib.models import new_job_id


def test_all_is_exactly_the_public_api() -> None:
    """__all__ lists every public name, and each one exists."""
    assert sorted(sclib.__all__) == sorted(set(sclib.__all__))
    for name in sclib.__all__:
        assert hasattr(sclib, name), name
    public = {
        n
        for n in dir(sclib)
        if not n.startswith("_") and not isinstance(getattr(sclib, n), ModuleType)
    }
    assert public - {"annotations"} == set(sclib.__all__) - {"__version__"}


def test_import_pulls_in_no_optional_dependency() -> None:
    """import sclib loads neither pymongo nor anything server-side."""
    code = (
        "import sys, sclib; heavy = {'pymongo', 'fastapi', 'httpx', 'uvicorn', "
        "'fsspec', 'mongomock', 'pydantic_settings'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "url",
    [
        "jobs.db",
        "sqlite://",
        "sqlite:///",
        "postgres://localhost/x",
        "",
        "mongodb:///db",
    ],
)
def test_malformed_backend_urls_are_explained(url: str) -> None:
    """A bad URL names itself and shows the expected form."""
    with pytest.raises(ConfigurationError, match=r"expected '(sqlite|mongodb)://"):
        open_store(url)


def test_sqlite_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three slashes then a path: relative; four slashes: absolute."""
    monkeypatch.chdir(tmp_path)
    rel = open_store("sqlite:///data/rel.db")
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")
    try:
        assert (tmp_path / "data" / "rel.db").exists()
        assert (tmp_path / "abs.db").exists()
    finally:
        rel.close()
        absolute.close()


def test_job_ids_are_unique_and_time_ordered() -> None:
    """Ids made in one process sort in creation order, even across threads."""
    ids: list[str] = []
    lock = threading.Lock()

    def make() -> None:
        for _ in range(2000):
            new = new_job_id()
            with lock:
                ids.append(new)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == len(ids) == 8000
    sequential = [new_job_id() for _ in range(5000)]
    assert sequential == sorted(sequential)
    assert all(len(i) == 32 for i in sequential)
