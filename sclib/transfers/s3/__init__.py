"""Amazon S3 (and S3-compatible stores): a source and a destination, through s3fs.

URLs are ``s3://bucket/key`` (``s3a://`` is accepted too and reported as ``s3://``).
Both classes take the same options, the seed's names first:

==========================  =====================================================
option                      meaning
==========================  =====================================================
``access_key_id``           AWS access key id (s3fs ``key``)
``secret_access_key``       AWS secret access key (s3fs ``secret``)
``session_token``           temporary session token (s3fs ``token``)
``region``                  region name (``client_kwargs["region_name"]``)
``endpoint_url``            another endpoint: MinIO, Ceph, a local test server
``anon``                    unsigned requests, for public buckets
==========================  =====================================================

Any other option is passed to :class:`s3fs.S3FileSystem` as it is (``key``,
``secret``, ``client_kwargs``, ``config_kwargs``, ``requester_pays``...); a name that
s3fs does not know is refused with :class:`~sclib.errors.ConfigurationError` rather
than silently ignored. Credentials are never logged nor put in an error message or
a URL, and :func:`repr` of these objects leaves them out.

Reading (:class:`S3Source`) identifies an object by its ETag (and VersionId when
the bucket is versioned). Each ranged read is a conditional ``GetObject`` with
``If-Match`` on that ETag, so an object replaced since it was described fails the
very request that would have mixed versions, with
:class:`~sclib.errors.SourceChanged`; the ETag and total size the server reports
with the bytes are checked as well, for S3-compatible stores that ignore
``If-Match``, and so is the first offset served, for those that ignore ``Range``
(:class:`~sclib.errors.SourceError` rather than bytes of another offset).

Writing (:class:`S3Destination`) uses one multipart upload per object, one part per
chunk (part number = chunk index + 1). Each part is sent with its ``Content-MD5``
and its returned ETag is compared with the MD5 of the chunk. Nothing exists at the
key until :meth:`S3Writer.commit` completes the upload. A 0-byte object has no
chunks and no multipart upload: :meth:`S3Writer.commit` writes it with one
``PutObject``. Every other object, however small, goes through the multipart upload
(S3 accepts a last, or only, part of any size), so there is one code path to resume.
"""

from __future__ import annotations

from sclib.transfers.s3.common import s3_error, s3fs_options
from sclib.transfers.s3.destination import S3Destination, S3Writer
from sclib.transfers.s3.source import S3Source

__all__ = ["S3Destination", "S3Source", "S3Writer", "s3_error", "s3fs_options"]
