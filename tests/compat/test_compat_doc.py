"""``docs/compat.md`` and the wire-contract tests stay in step: every row names
tests that exist and say they cover it, every original route and client method
has a row, and every test of ``tests/compat`` names the rows it covers."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "compat.md"
HERE = Path(__file__).resolve().parent

STATES = ("same", "superset", "differs deliberately", "not provided")
ROW = re.compile(r"^\| ([RMSB]\d\d) \|(.*)\|\s*$")
ROW_ID = re.compile(r"\b([RMSB]\d\d)\b")
TEST_NAME = re.compile(r"`(test_\w+)`")

#: Every route of the four original apps (the wire contract's section 0).
ORIGINAL_ROUTES = (
    "`GET /`",
    "`GET /health`",
    "`POST /api/upload/initiate`",
    "`POST /api/upload/upload`",
    "`POST /api/upload/upload-path`",
    "`GET /api/upload/status/{job_id}`",
    "`POST /api/upload/cancel/{job_id}`",
    "`GET /api/upload/supported-sources`",
    "`GET /api/upload/limits`",
    "`GET /api/upload/datasets/{identifier}`",
    "`GET /api/datasets`",
    "`GET /api/dataset/{dataset_id}`",
    "`GET /api/dataset/{dataset_id}/status`",
    "`POST /api/upload/local/upload`",
    "`GET /api/upload/jobs`",
    "`GET /api/upload/estimate-time`",
    "`POST /api/upload/large/initiate`",
    "`POST /api/upload/large/chunk/{upload_id}/{chunk_index}`",
    "`GET /api/upload/large/status/{upload_id}`",
    "`POST /api/upload/large/complete/{upload_id}`",
    "`GET /api/upload/large/resume/{upload_id}`",
    "`POST /api/upload/cloud/large`",
    "`GET /api/upload/large/limits`",
    "`DELETE /api/upload/large/cancel/{upload_id}`",
    "`GET /health/large-files`",
    "`GET /api/auth/status`",
)

#: Every public method of the original client classes, by class.
ORIGINAL_METHODS = {
    "SCLib_UploadClient_Unified.ScientistCloudUploadClient": (
        "upload_file",
        "upload_file_by_path",
        "upload_file_by_path_async",
        "initiate_google_drive_upload",
        "initiate_s3_upload",
        "initiate_url_upload",
        "upload_from_source",
        "get_upload_status",
        "cancel_upload",
        "list_upload_jobs",
        "get_supported_sources",
        "get_upload_limits",
        "health_check",
        "get_api_info",
        "wait_for_completion",
        "upload_directory",
        "upload_directory_from_source",
    ),
    "SCLib_UploadClient_Unified.AsyncScientistCloudUploadClient": (
        "upload_file",
        "get_upload_status",
        "wait_for_completion",
        "upload_directory",
    ),
    "SCLib_UploadClient_LargeFiles.LargeFileUploadClient": (
        "calculate_file_hash",
        "initiate_large_upload",
        "upload_chunk",
        "upload_file_chunked",
        "upload_file_parallel",
        "get_chunk_status",
        "get_resume_info",
        "complete_upload",
        "cancel_upload",
        "get_upload_limits",
        "health_check",
        "wait_for_completion",
    ),
    "SCLib_UploadClient_LargeFiles.AsyncLargeFileUploadClient": (
        "upload_file_async",
        "_calculate_file_hash_async",
        "_calculate_file_hash_sync",
    ),
    "SCLib_UploadClient.ScientistCloudUploadClient": (
        "upload_local_file",
        "initiate_google_drive_upload",
        "initiate_s3_upload",
        "initiate_url_upload",
        "get_upload_status",
        "cancel_upload",
        "list_upload_jobs",
        "get_supported_sources",
        "wait_for_completion",
        "main()",
    ),
    "SCLib_UploadClient_FastAPI": (
        "ScientistCloudUploadClient.upload_local_file",
        "ScientistCloudUploadClient.upload_file_by_path",
        "ScientistCloudUploadClient.initiate_google_drive_upload",
        "ScientistCloudUploadClient.initiate_s3_upload",
        "ScientistCloudUploadClient.initiate_url_upload",
        "ScientistCloudUploadClient.get_upload_status",
        "ScientistCloudUploadClient.cancel_upload",
        "ScientistCloudUploadClient.list_upload_jobs",
        "ScientistCloudUploadClient.get_supported_sources",
        "ScientistCloudUploadClient.estimate_upload_time",
        "ScientistCloudUploadClient.wait_for_completion",
        "ScientistCloudUploadClient.health_check",
        "ScientistCloudUploadClient.get_api_info",
        "AsyncScientistCloudUploadClient.upload_local_file",
        "AsyncScientistCloudUploadClient.get_upload_status",
        "AsyncScientistCloudUploadClient.wait_for_completion",
    ),
}


@dataclass(frozen=True)
class Row:
    ident: str
    cells: tuple[str, ...]
    section: str

    @property
    def tests(self) -> list[str]:
        return TEST_NAME.findall(self.cells[-1])


def _rows() -> list[Row]:
    rows = []
    section = ""
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        match = ROW.match(line)
        if match:
            cells = tuple(c.strip() for c in match.group(2).split(" | "))
            rows.append(Row(match.group(1), cells, section))
    return rows


def _tests() -> dict[str, str]:
    """Every test function of ``tests/compat`` and its docstring."""
    found: dict[str, str] = {}
    for path in sorted(HERE.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                assert node.name not in found, f"{node.name} is defined twice"
                found[node.name] = ast.get_docstring(node) or ""
    return found


ROWS = _rows()
TESTS = _tests()


def test_the_page_has_rows_and_unique_ids() -> None:
    """docs/compat.md has route, method, script and difference rows, each id
    once."""
    ids = [r.ident for r in ROWS]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert {i[0] for i in ids} == set("RMSB")


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.ident)
def test_every_row_names_tests_that_cover_it(row: Row) -> None:
    """The row states sclib's state in one of the four words and names at
    least one test of ``tests/compat`` whose docstring names the row."""
    assert any(cell in STATES for cell in row.cells), row.cells
    assert row.tests, f"{row.ident} names no test"
    for name in row.tests:
        assert name in TESTS, f"{row.ident}: no test {name}"
        assert row.ident in ROW_ID.findall(TESTS[name]), (
            f"{name}'s docstring does not name {row.ident}"
        )


def test_every_compat_test_names_its_rows() -> None:
    """Every test of ``tests/compat`` (but these) has a docstring naming rows
    that exist, and each of those rows lists it."""
    rows = {r.ident: r for r in ROWS}
    own = {n for n in TESTS if n in globals()}
    problems = []
    for name, doc in TESTS.items():
        if name in own:
            continue
        named = set(ROW_ID.findall(doc))
        if not named:
            problems.append(f"{name}: its docstring names no row")
        for ident in sorted(named):
            if ident not in rows:
                problems.append(f"{name}: no row {ident}")
            elif name not in rows[ident].tests:
                problems.append(f"{name}: row {ident} does not list it")
    assert problems == []


def test_every_original_route_has_a_row() -> None:
    """Each route of the four original apps is named in the routes table."""
    routes = " ".join(r.cells[0] for r in ROWS if r.ident.startswith("R"))
    missing = [route for route in ORIGINAL_ROUTES if route not in routes]
    assert missing == []


def test_every_original_client_method_has_a_row() -> None:
    """Each method of the original client classes has a row under its
    class's heading."""
    missing = []
    for cls, methods in ORIGINAL_METHODS.items():
        cells = " ".join(
            r.cells[0] for r in ROWS if r.ident.startswith("M") and cls in r.section
        )
        missing += [f"{cls}.{m}" for m in methods if f"`{m}" not in cells]
    assert missing == []


def test_the_page_is_linked() -> None:
    """docs/index.md and README.md's documentation list link the page."""
    assert "(compat.md)" in (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    assert "(docs/compat.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
