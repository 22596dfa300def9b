"""Google Drive as a source: ``gdrive://<file-or-folder-id>``.

:class:`DriveSource` talks to the Google Drive v3 REST API with httpx. It is what a
ScientistCloud "Google Drive import" (``file_id`` + ``service_account_file``) becomes::

    DriveSource(service_account_file="/path/to/service.json").walk("gdrive://1ABC...")

**Credentials**, exactly one of:

* ``service_account_file`` (path to the JSON key a service account comes with) or
  ``service_account_info`` (that JSON, as a dict): a JWT assertion signed with its
  RS256 key is exchanged for an access token at the JSON's ``token_uri``. Needs the
  ``google-auth`` package (the ``gdrive`` extra); ``subject`` impersonates a user
  through domain-wide delegation.
* ``access_token``: a ready OAuth 2.0 access token. It cannot be refreshed; once it
  expires, reads fail with a non-retryable :class:`~sclib.errors.SourceError`.
* ``oauth_refresh_token`` with ``client_id`` and ``client_secret`` (and
  ``token_uri``): a user's OAuth refresh token. Needs ``google-auth`` too.

Access tokens are renewed shortly before they expire, and once more when Drive
answers 401. No credential or token is ever logged, put in an exception message, or
returned.

**Objects.** A binary file is read with ranged ``alt=media`` requests; its identity
is its ``md5`` and ``head_revision_id`` (``modified_time`` when Drive reports
neither). ``version`` and ``modifiedTime`` are left out of a binary file's identity
on purpose: they also move when a file is only renamed, moved or shared, which would
refuse resumes for nothing. After every ranged read the file's metadata is fetched
again, and :class:`~sclib.errors.SourceChanged` is raised if its revision or size
moved, so a read never returns bytes of a version other than the one described.

**Google Docs** (``application/vnd.google-apps.*`` other than folders) have no bytes
of their own; they are copied as exports (:attr:`DriveSource.export_formats`: Docs
to .docx, Sheets to .xlsx, Slides to .pptx, Drawings to .png, Apps Script to .json,
other exportable types to PDF; forms, sites, maps and the like are skipped with a
warning). Drive does not say how large an export is, and exports are regenerated on
each request (not necessarily byte-identical), so a Doc is exported once, when it is
listed by :meth:`~DriveSource.walk` or :meth:`~DriveSource.stat`, into a temporary
spool (memory up to ``spool_memory`` bytes, then a file in ``spool_dir``; Google caps
exports at 10 MB, this source at ``max_export_size``). Its size is the spool's, its
reads are served from the spool, and :meth:`~DriveSource.supports_ranges` is False for
it. The spools are freed by :meth:`~DriveSource.close`. Reading an exported object in
a later process (a resumed transfer) exports it again and raises
:class:`~sclib.errors.SourceChanged` if the Doc's version or the export's size
changed. An exported object's identity is its ``version`` and ``modified_time`` plus
the ``export_mime`` it was exported to.

**Folders** are listed recursively (following ``nextPageToken``; trashed items left
out; shortcuts followed unless ``follow_shortcuts=False``, with cycles cut). Keys are
folder-relative paths built from the names: ``/`` and ``\\`` in a name become
``_``, a name ``.`` or ``..`` becomes underscores, and an exported Doc's key gets
the export's extension. Names that collide in one folder are told apart
deterministically: the earliest created item (then the smallest id) keeps the name,
the others get `` (2)``, `` (3)``... before the extension. Each object's URL is
``gdrive://<its id>``.

**Errors.** 404 is :class:`~sclib.errors.SourceNotFound` (and
:class:`~sclib.errors.SourceChanged` during a read: the object was there when it was
listed). 429, 5xx, Drive's rate-limit 403s and network failures are a retryable
:class:`~sclib.errors.SourceError` (retrying is the engine's job). Other 403s, a 401
that a new token does not cure, and other 4xx are a :class:`~sclib.errors.SourceError`
whose ``retryable`` is False, with Drive's reason and a hint. Credentials that cannot
be loaded, or that the token endpoint refuses, are a
:class:`~sclib.errors.ConfigurationError`.
"""

from __future__ import annotations

from sclib.transfers.gdrive.common import (
    DEFAULT_EXPORT_FORMATS,
    DRIVE_READONLY_SCOPE,
    drive_file_id,
)
from sclib.transfers.gdrive.source import DriveSource

__all__ = [
    "DEFAULT_EXPORT_FORMATS",
    "DRIVE_READONLY_SCOPE",
    "DriveSource",
    "drive_file_id",
]
