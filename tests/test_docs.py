"""Every ```python block in README.md and docs/ runs, so examples cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)

#: a page with this marker is a tutorial: its blocks run in order, as one session
SESSION = "<!-- docs-test: one session -->"


def _snippets() -> list[object]:
    out = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        blocks = BLOCK.findall(text)
        if SESSION in text:
            out.append(pytest.param("\n".join(blocks), id=f"{page.name}:session"))
        else:
            out += [
                pytest.param(code, id=f"{page.name}:{n}")
                for n, code in enumerate(blocks)
            ]
    return out


SNIPPETS = _snippets()


@pytest.mark.parametrize("code", SNIPPETS)
def test_snippet_runs(
    code: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The snippet executes without error in an empty folder."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__snippet__"}
    exec(compile(code, "<snippet>", "exec"), namespace)  # noqa: S102
    for value in namespace.values():
        close = getattr(value, "close", None)
        if type(value).__name__ == "JobQueue" and callable(close):
            close()


def test_every_error_class_is_documented() -> None:
    """docs/errors.md has a row for each class in sclib.errors.__all__."""
    import sclib.errors

    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    missing = [n for n in sclib.errors.__all__ if f"| `{n}` |" not in text]
    assert missing == []


def test_every_setting_is_documented() -> None:
    """docs/settings.md names the first environment variable of every setting."""
    from sclib.settings import Settings

    text = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    missing = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        first = alias.choices[0] if alias is not None else name  # type: ignore[union-attr]
        if f"`{first}`" not in text:
            missing.append(str(first))
    assert missing == []


_FENCE = re.compile(r"```.*?```", re.DOTALL)
_HEADING = re.compile(r"^#+\s+(.*)$", re.MULTILINE)
_LINK = re.compile(r"\]\(([^)#\s]*)#([^)\s]+)\)")


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped,
    spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_to_a_heading_finds_it() -> None:
    """A link such as ``server.md#safety`` names a heading the page has (a
    renamed or moved heading breaks links silently otherwise)."""
    pages = [*PAGES, ROOT / "benchmarks" / "README.md"]
    anchors = {
        page.resolve(): {
            _slug(h) for h in _HEADING.findall(_FENCE.sub("", page.read_text()))
        }
        for page in pages
    }
    broken = []
    for page in pages:
        for target, anchor in _LINK.findall(_FENCE.sub("", page.read_text())):
            path = (page.parent / target).resolve() if target else page.resolve()
            if path in anchors and anchor not in anchors[path]:
                broken.append(f"{page.relative_to(ROOT)}: {target}#{anchor}")
    assert not broken, broken
    assert sum(len(a) for a in anchors.values()) > 100  # the pages were read
