"""DriveSource against a Drive v3 stand-in served on 127.0.0.1 (see drive_standin)."""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cryptography", reason="the gdrive tests need cryptography")
pytest.importorskip("google.oauth2.service_account", reason="needs google-auth")

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from sclib.errors import (
    ConfigurationError,
    InvalidInput,
    MissingDependency,
    SourceChanged,
    SourceError,
    SourceNotFound,
)
from sclib.transfers.gdrive import DriveSource
from sclib.transfers.sources import SourceObject, open_source

try:  # tests/transfers is a package
    from tests.transfers.drive_standin import DOC, FORM, SHEET, DriveStandin
except ImportError:  # tests/transfers is a rootdir-less folder on sys.path
    from drive_standin import DOC, FORM, SHEET, DriveStandin  # type: ignore[no-redef,import-not-found,unused-ignore]

SA_EMAIL = "ingest@sclib-test.iam.gserviceaccount.com"
CLIENT_ID = "client-123.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-client-secret-do-not-show"  # noqa: S105
REFRESH_TOKEN = "1//refresh-token-do-not-show"  # noqa: S105
REVOKED_TOKEN = "1//revoked"  # noqa: S105
SOME_TOKEN = "ya29.not-checked"  # noqa: S105
BAD_KEY_BODY = "Tm90QUtleUF0QWxsU2VjcmV0"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def standin(rsa_key: rsa.RSAPrivateKey) -> Iterator[DriveStandin]:
    drive = DriveStandin(page_size=2)
    drive.service_accounts[SA_EMAIL] = rsa_key.public_key()
    drive.oauth_clients[CLIENT_ID] = (CLIENT_SECRET, REFRESH_TOKEN)
    with drive.running():
        yield drive


@pytest.fixture
def sa_info(standin: DriveStandin, rsa_key: rsa.RSAPrivateKey) -> dict[str, str]:
    return {
        "type": "service_account",
        "project_id": "sclib-test",
        "private_key_id": "0123456789abcdef",
        "private_key": _pem(rsa_key),
        "client_email": SA_EMAIL,
        "client_id": "1234567890",
        "token_uri": standin.token_uri,
    }


@pytest.fixture
def source(standin: DriveStandin, sa_info: dict[str, str]) -> Iterator[DriveSource]:
    src = DriveSource(
        base_url=standin.base_url, service_account_info=sa_info, timeout=5
    )
    yield src
    src.close()


def read_all(src: DriveSource, obj: SourceObject, chunk: int) -> bytes:
    parts = []
    for offset in range(0, obj.size, chunk):
        parts.append(src.read(obj, offset, chunk))
    return b"".join(parts)


def test_single_file_read_by_ranges_reassembles_exactly(
    standin: DriveStandin, source: DriveSource
) -> None:
    """A file read in odd-sized ranges, concurrently and out of order, gives back
    exactly its bytes; stat and walk describe it (key "", size, md5, revision)."""
    data = random.Random(7).randbytes(100_003)
    file_id = standin.add_file("scan.raw", data)
    url = f"gdrive://{file_id}"

    obj = source.stat(url)
    assert obj.url == url
    assert obj.key == ""
    assert obj.size == len(data)
    assert obj.content_type == "application/octet-stream"
    assert set(obj.identity) == {"md5", "head_revision_id"}
    assert source.supports_ranges(obj)
    assert list(source.walk(url)) == [obj]

    chunk = 8191
    offsets = list(range(0, obj.size, chunk))
    random.Random(1).shuffle(offsets)
    with ThreadPoolExecutor(4) as pool:
        parts = dict(
            zip(
                offsets,
                pool.map(lambda o: source.read(obj, o, chunk), offsets),
                strict=True,
            )
        )
    assert b"".join(parts[o] for o in sorted(parts)) == data
    assert source.read(obj, obj.size, 10) == b""
    assert source.read(obj, obj.size - 3, 10) == data[-3:]
    ranges = [r["range"] for r in standin.requests if r["query"].get("alt") == "media"]
    assert "bytes=0-8190" in ranges


def test_range_ignored_by_the_server_still_reads_the_right_bytes(
    standin: DriveStandin, source: DriveSource
) -> None:
    """If a ranged download comes back whole (200), read keeps only the range."""
    data = random.Random(3).randbytes(5001)
    obj = source.stat(f"gdrive://{standin.add_file('whole.bin', data)}")
    standin.ignore_ranges = True
    assert source.read(obj, 1234, 1000) == data[1234:2234]
    assert source.read(obj, 4500, 1000) == data[4500:]


def test_exports_larger_than_max_export_size_are_refused(
    standin: DriveStandin, sa_info: dict[str, str]
) -> None:
    """An export larger than max_export_size is a non-retryable SourceError."""
    doc = standin.add_doc("Huge", "x" * 5000)
    with (
        DriveSource(
            base_url=standin.base_url,
            service_account_info=sa_info,
            max_export_size=1000,
            spool_memory=100,
        ) as src,
        pytest.raises(SourceError, match="max_export_size") as err,
    ):
        src.stat(f"gdrive://{doc}")
    assert not err.value.retryable


def test_folder_walk_lists_keys_and_sizes_across_pages_and_nested_folders(
    standin: DriveStandin, source: DriveSource
) -> None:
    """A folder is listed recursively through several pages (page size 2) into
    folder-relative keys with the right sizes; trashed files are left out."""
    root = standin.add_folder("run-42")
    for i in range(5):
        standin.add_file(f"frame{i}.h5", bytes(10 + i), root)
    standin.add_file("old.h5", b"x", root, trashed=True)
    sub = standin.add_folder("calib", root)
    standin.add_file("dark.tif", b"d" * 7, sub)
    standin.add_file("flat.tif", b"f" * 9, sub)
    deeper = standin.add_folder("raw", sub)
    standin.add_file("a.bin", b"a" * 3, deeper)
    standin.add_folder("empty", root)

    objs = list(source.walk(f"gdrive://{root}"))
    assert {o.key: o.size for o in objs} == {
        **{f"frame{i}.h5": 10 + i for i in range(5)},
        "calib/dark.tif": 7,
        "calib/flat.tif": 9,
        "calib/raw/a.bin": 3,
    }
    assert [o.key for o in objs] == sorted(o.key for o in objs)
    assert all(o.url.startswith("gdrive://id") for o in objs)
    listings = [r for r in standin.requests if r["path"] == "/drive/v3/files"]
    assert any(r["query"].get("pageToken") for r in listings)
    frame = next(o for o in objs if o.key == "frame3.h5")
    assert source.read(frame, 0, 100) == bytes(13)


def test_duplicate_and_unsafe_names_get_deterministic_safe_keys(
    standin: DriveStandin, source: DriveSource
) -> None:
    """Names with "/" or ".." never escape the folder, and names that collide in one
    folder get " (2)"-style suffixes, the earliest created keeping the name."""
    root = standin.add_folder("mixed")
    first = standin.add_file("data.csv", b"first", root)
    standin.add_file("data.csv", b"second", root)
    standin.add_file("data (2).csv", b"real two", root)
    standin.add_file("../etc/passwd", b"p", root)
    standin.add_file("..", b"dots", root)
    standin.add_folder("data.csv", root)  # a folder with a file's name, empty

    objs = {o.key: o for o in source.walk(f"gdrive://{root}")}
    assert set(objs) == {
        "data.csv",
        "data (2).csv",
        "data (3).csv",
        ".._etc_passwd",
        "__",
    }
    assert objs["data.csv"].url == f"gdrive://{first}"
    assert source.read(objs["data (2).csv"], 0, 100) == b"real two"
    assert source.read(objs["data (3).csv"], 0, 100) == b"second"
    again = {o.key: o.url for o in source.walk(f"gdrive://{root}")}
    assert again == {k: o.url for k, o in objs.items()}


def test_google_docs_are_listed_and_read_as_exports(
    standin: DriveStandin, source: DriveSource, caplog: pytest.LogCaptureFixture
) -> None:
    """Google Docs and Sheets are listed as .docx/.xlsx exports whose size is known
    up front, read sequentially without ranges, and exported only once; a form,
    which cannot be exported, is skipped with a warning."""
    root = standin.add_folder("notes")
    doc = standin.add_doc("Lab notebook", "day 1: " + "x" * 5000, root)
    standin.add_doc("Budget", "1,2,3", root, mime=SHEET)
    standin.add_doc("Survey", "", root, mime=FORM)
    standin.add_file("plot.png", b"\x89PNG", root, mime="image/png")

    with caplog.at_level(logging.WARNING, logger="sclib.transfers.gdrive"):
        objs = {o.key: o for o in source.walk(f"gdrive://{root}")}
    assert set(objs) == {"Lab notebook.docx", "Budget.xlsx", "plot.png"}
    assert "Survey" in caplog.text

    notebook = objs["Lab notebook.docx"]
    expected = standin.items[doc].export(DOCX)
    assert notebook.size == len(expected)
    assert notebook.content_type == DOCX
    assert notebook.identity["export_mime"] == DOCX
    assert not source.supports_ranges(notebook)
    assert source.supports_ranges(objs["plot.png"])
    assert read_all(source, notebook, 1000) == expected
    assert objs["Budget.xlsx"].content_type == XLSX
    assert standin.exports == 2  # once each, at listing time

    assert source.stat(f"gdrive://{doc}").size == notebook.size
    assert standin.exports == 2  # the spool is reused


def test_export_formats_option_and_re_export_in_a_new_source(
    standin: DriveStandin, sa_info: dict[str, str]
) -> None:
    """export_formats picks the export type; a new source (a resumed transfer) exports
    the same version again, and refuses with SourceChanged once the Doc was edited."""
    doc = standin.add_doc("Protocol", "step 1", None)
    opts: dict[str, Any] = {
        "base_url": standin.base_url,
        "service_account_info": sa_info,
        "export_formats": {DOC: "application/pdf"},
    }
    with DriveSource(**opts) as first:
        obj = first.stat(f"gdrive://{doc}")
    assert obj.content_type == "application/pdf"
    with DriveSource(**opts) as second:
        assert second.read(obj, 0, obj.size) == standin.items[doc].export(
            "application/pdf"
        )
    standin.update(doc, b"step 1, step 2")
    with DriveSource(**opts) as third, pytest.raises(SourceChanged, match="changed"):
        third.read(obj, 0, obj.size)


def test_access_token_is_renewed_before_it_expires(
    standin: DriveStandin, source: DriveSource
) -> None:
    """With tokens that live 1 s, the source gets a new one before the old one
    expires: reads keep working and Drive never answers 401."""
    standin.token_lifetime = 1.0
    data = b"0123456789" * 10
    obj = source.stat(f"gdrive://{standin.add_file('t.bin', data)}")
    assert source.read(obj, 0, 50) == data[:50]
    time.sleep(1.2)
    assert source.read(obj, 50, 50) == data[50:]
    assert standin.token_requests >= 2
    assert standin.unauthorized == 0


def test_access_token_is_renewed_on_401(
    standin: DriveStandin, source: DriveSource
) -> None:
    """When Drive rejects the token (revoked), the source gets a new one once and
    the read succeeds."""
    obj = source.stat(f"gdrive://{standin.add_file('t.bin', b'abcdef')}")
    before = standin.token_requests
    standin.revoke_tokens()
    assert source.read(obj, 2, 3) == b"cde"
    assert standin.unauthorized == 1
    assert standin.token_requests == before + 1


def test_refresh_token_credentials_work(standin: DriveStandin) -> None:
    """A user's OAuth refresh token with its client id and secret gets access
    tokens at token_uri."""
    file_id = standin.add_file("r.bin", b"refresh")
    with DriveSource(
        base_url=standin.base_url,
        oauth_refresh_token=REFRESH_TOKEN,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token_uri=standin.token_uri,
    ) as src:
        obj = src.stat(f"gdrive://{file_id}")
        assert src.read(obj, 0, 100) == b"refresh"
    with (
        DriveSource(
            base_url=standin.base_url,
            oauth_refresh_token=REVOKED_TOKEN,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            token_uri=standin.token_uri,
        ) as src,
        pytest.raises(ConfigurationError, match="refused these credentials"),
    ):
        src.stat(f"gdrive://{file_id}")


def test_static_access_token_works_until_rejected(standin: DriveStandin) -> None:
    """A ready access token is used as is; once Drive rejects it the error is a
    non-retryable SourceError saying it cannot be renewed."""
    file_id = standin.add_file("s.bin", b"static")
    token, _ = standin.issue_token()
    with DriveSource(base_url=standin.base_url, access_token=token) as src:
        obj = src.stat(f"gdrive://{file_id}")
        assert src.read(obj, 0, 6) == b"static"
        standin.revoke_tokens()
        with pytest.raises(SourceError, match="fresh access_token") as err:
            src.read(obj, 0, 6)
    assert not err.value.retryable
    assert standin.token_requests == 0


def test_file_changed_between_reads_raises_source_changed(
    standin: DriveStandin, source: DriveSource
) -> None:
    """A new revision uploaded between two reads makes the next read raise
    SourceChanged; a rename alone (a metadata change) does not."""
    file_id = standin.add_file("v.bin", b"A" * 1000)
    obj = source.stat(f"gdrive://{file_id}")
    assert source.read(obj, 0, 500) == b"A" * 500
    standin.rename(file_id, "renamed.bin")
    assert source.read(obj, 500, 100) == b"A" * 100
    standin.update(file_id, b"B" * 1000)
    with pytest.raises(SourceChanged, match="changed on Google Drive"):
        source.read(obj, 500, 500)


def test_file_changed_during_a_read_raises_source_changed(
    standin: DriveStandin, source: DriveSource
) -> None:
    """A revision uploaded while a range is being downloaded is caught by the check
    after the download: the read raises SourceChanged rather than return bytes of
    an unknown version. A file deleted mid-transfer is SourceChanged too."""
    file_id = standin.add_file("w.bin", b"A" * 1000)
    obj = source.stat(f"gdrive://{file_id}")
    standin.change_after_next_download(file_id, b"C" * 1000)
    with pytest.raises(SourceChanged):
        source.read(obj, 0, 100)
    other = source.stat(f"gdrive://{standin.add_file('x.bin', b'x' * 10)}")
    standin.delete(other.url.removeprefix("gdrive://"))
    with pytest.raises(SourceChanged, match="disappeared"):
        source.read(other, 0, 10)


def test_missing_ids_and_folders_given_to_stat(
    standin: DriveStandin, source: DriveSource
) -> None:
    """A missing id is SourceNotFound for stat and walk; a folder given to stat is
    SourceNotFound saying to copy it as a folder; a bad URL is InvalidInput."""
    with pytest.raises(SourceNotFound, match="does not exist"):
        source.stat("gdrive://nope123")
    with pytest.raises(SourceNotFound):
        list(source.walk("gdrive://nope123"))
    folder = standin.add_folder("f")
    with pytest.raises(SourceNotFound, match="copy it as a folder"):
        source.stat(f"gdrive://{folder}")
    with pytest.raises(InvalidInput):
        source.stat("gdrive://a/b")
    with pytest.raises(InvalidInput):
        source.stat("s3://bucket/key")


def test_http_errors_map_to_retryable_or_permanent_source_errors(
    standin: DriveStandin, source: DriveSource
) -> None:
    """5xx, 429 and rate-limit 403s are retryable SourceErrors; a permission 403 is
    a non-retryable SourceError with Drive's reason and a hint."""
    file_id = standin.add_file("e.bin", b"e" * 10)
    obj = source.stat(f"gdrive://{file_id}")
    for status, reason in [
        (500, "backendError"),
        (503, "backendError"),
        (429, "rateLimitExceeded"),
        (403, "userRateLimitExceeded"),
    ]:
        standin.fail(file_id, status, reason)
        with pytest.raises(SourceError) as err:
            source.read(obj, 0, 10)
        assert err.value.retryable, (status, reason)
    assert source.read(obj, 0, 10) == b"e" * 10
    standin.forbid(file_id)
    with pytest.raises(SourceError, match="insufficientFilePermissions") as err:
        source.read(obj, 0, 10)
    assert not err.value.retryable
    assert "share the file" in str(err.value)


def test_network_failure_is_a_retryable_source_error(sa_info: dict[str, str]) -> None:
    """A server that cannot be reached gives a retryable SourceError."""
    with (
        DriveSource(
            base_url="http://127.0.0.1:9", access_token=SOME_TOKEN, timeout=2
        ) as src,
        pytest.raises(SourceError, match="cannot reach") as err,
    ):
        src.stat("gdrive://abc")
    assert err.value.retryable


def test_shortcuts_are_followed_and_cycles_cut(
    standin: DriveStandin, source: DriveSource
) -> None:
    """A shortcut to a file is copied under the shortcut's name; a shortcut to a
    folder is walked; a shortcut back to an enclosing folder is skipped."""
    data_dir = standin.add_folder("shared-data")
    target = standin.add_file("real.dat", b"r" * 5, data_dir)
    root = standin.add_folder("project")
    standin.add_shortcut("link.dat", target, root)
    standin.add_shortcut("data", data_dir, root)
    standin.add_shortcut("loop", root, root)

    keys = {o.key: o.url for o in source.walk(f"gdrive://{root}")}
    assert keys == {
        "link.dat": f"gdrive://{target}",
        "data/real.dat": f"gdrive://{target}",
    }


def test_bad_service_account_json_is_a_clear_configuration_error(
    tmp_path: Path, standin: DriveStandin, sa_info: dict[str, str]
) -> None:
    """A service account JSON whose private key is not a key, that lacks fields, that
    is not JSON, or whose key the token endpoint does not know gives a
    ConfigurationError that says what is wrong and shows no key material."""
    bad_key = (
        f"-----BEGIN PRIVATE KEY-----\n{BAD_KEY_BODY}\n-----END PRIVATE KEY-----\n"
    )
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({**sa_info, "private_key": bad_key}))
    with pytest.raises(ConfigurationError, match="private_key is not a valid") as err:
        DriveSource(base_url=standin.base_url, service_account_file=str(path))
    assert BAD_KEY_BODY not in str(err.value)
    # no chained exception (whose message could quote the key)
    assert err.value.__cause__ is None
    assert err.value.__suppress_context__

    without = {k: v for k, v in sa_info.items() if k != "client_email"}
    with pytest.raises(ConfigurationError, match="lacks client_email"):
        DriveSource(service_account_info=without)
    path.write_text("{not json")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        DriveSource(service_account_file=path)
    with pytest.raises(ConfigurationError, match="cannot read"):
        DriveSource(service_account_file=tmp_path / "missing.json")
    with pytest.raises(ConfigurationError, match="not a service account"):
        DriveSource(service_account_info={**sa_info, "type": "authorized_user"})

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with (
        DriveSource(
            base_url=standin.base_url,
            service_account_info={**sa_info, "private_key": _pem(other_key)},
        ) as src,
        pytest.raises(ConfigurationError, match="Invalid JWT Signature"),
    ):
        src.stat("gdrive://anything")


def test_credentials_options_are_validated() -> None:
    """Exactly one kind of credentials is required, and a refresh token needs its
    client id and secret."""
    with pytest.raises(ConfigurationError, match="got none"):
        DriveSource()
    with pytest.raises(ConfigurationError, match="access_token, oauth_refresh_token"):
        DriveSource(access_token=SOME_TOKEN, oauth_refresh_token=REFRESH_TOKEN)
    with pytest.raises(ConfigurationError, match="client_id and client_secret"):
        DriveSource(oauth_refresh_token=REFRESH_TOKEN)


def test_missing_google_auth_raises_missing_dependency(
    monkeypatch: pytest.MonkeyPatch, sa_info: dict[str, str]
) -> None:
    """Without google-auth, service-account credentials raise MissingDependency
    naming the package and the gdrive extra; a ready access token needs nothing."""
    monkeypatch.setitem(sys.modules, "google.oauth2.service_account", None)
    with pytest.raises(MissingDependency, match=r"sclib\[gdrive\]") as err:
        DriveSource(service_account_info=sa_info)
    assert err.value.package == "google-auth"
    DriveSource(access_token=SOME_TOKEN).close()


def test_secrets_never_in_logs_errors_or_results(
    standin: DriveStandin,
    source: DriveSource,
    sa_info: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Private key, signed assertions, client secret, refresh token and access tokens
    appear in no log record (at DEBUG, httpx's included), exception message, repr or
    returned object."""
    caplog.set_level(logging.DEBUG)
    root = standin.add_folder("s")
    file_id = standin.add_file("a.bin", b"a" * 100, root)
    standin.add_doc("d", "doc", root)
    texts: list[str] = []
    objs = list(source.walk(f"gdrive://{root}"))
    obj = source.stat(f"gdrive://{file_id}")
    source.read(obj, 0, 10)
    standin.revoke_tokens()
    source.read(obj, 10, 10)
    texts += [repr(o) for o in [*objs, obj]] + [repr(source)]
    standin.forbid(file_id)
    with pytest.raises(SourceError) as forbidden:
        source.read(obj, 0, 10)
    texts.append(str(forbidden.value))
    with DriveSource(
        base_url=standin.base_url,
        oauth_refresh_token=REFRESH_TOKEN,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token_uri=standin.token_uri,
    ) as user:
        texts.append(repr(user))
        assert len(list(user.walk(f"gdrive://{root}/"))) == 2
    with (
        DriveSource(
            base_url=standin.base_url,
            oauth_refresh_token=REFRESH_TOKEN,
            client_id=CLIENT_ID,
            client_secret="wrong-" + CLIENT_SECRET,
            token_uri=standin.token_uri,
        ) as wrong,
        pytest.raises(ConfigurationError) as refused,
    ):
        wrong.stat(f"gdrive://{file_id}")
    texts.append(str(refused.value))

    key_lines = [
        line for line in sa_info["private_key"].splitlines() if "-----" not in line
    ]
    secrets_ = [
        CLIENT_SECRET,
        REFRESH_TOKEN,
        *standin.issued,
        *standin.assertions,
        *key_lines[:3],
    ]
    assert standin.assertions
    assert len(standin.issued) >= 3
    everything = caplog.text + "\n".join(texts)
    for record in caplog.records:
        everything += repr(record.args)
    assert "HTTP Request" in caplog.text  # httpx did log at DEBUG/INFO
    for secret in secrets_:
        assert secret not in everything


def test_open_source_finds_the_drive_plugin(standin: DriveStandin) -> None:
    """open_source("gdrive://...") builds a DriveSource from the options given."""
    token, _ = standin.issue_token()
    file_id = standin.add_file("o.bin", b"open")
    with open_source(
        f"gdrive://{file_id}", base_url=standin.base_url, access_token=token
    ) as src:
        assert isinstance(src, DriveSource)
        assert src.read(src.stat(f"gdrive://{file_id}"), 0, 4) == b"open"
