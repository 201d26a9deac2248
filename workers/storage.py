"""Shared storage: where checkpoints and Ray's trial state live, named by one string everywhere.

A location is a local or NFS path, or a URI that pyarrow.fs resolves: `s3://bucket/prefix`,
`gs://bucket/prefix`. A URI may carry pyarrow's options as a query, kept on every location
derived from it, e.g. `s3://segq/runs?endpoint_override=http://127.0.0.1:9000&scheme=http` for
an S3 API that is not AWS. Credentials come from the usual places (AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role; GOOGLE_APPLICATION_CREDENTIALS for gs://).
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow.fs as pafs

from workers.exceptions import StorageError

SCHEMES = ("s3", "gs")
# pyarrow names the filesystem behind a path it gives back (e.g. Ray's checkpoint paths) so:
SCHEME_OF_FILESYSTEM = {"s3": "s3", "gcs": "gs"}


def is_uri(location: str | Path) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


def absolute(location: str | Path) -> str:
    """A URI as it is; a local path made absolute (trials run in other working directories)."""
    if is_uri(location):
        check_scheme(str(location))
        return str(location)
    return str(Path(str(location).removeprefix("file://")).expanduser().resolve())


def check_scheme(uri: str) -> None:
    scheme = urlsplit(uri).scheme
    if scheme not in SCHEMES:
        raise StorageError(f"{uri}: storage scheme {scheme!r} is not supported; use a path (local or NFS), "
                           f"{' or '.join(f'{name}://bucket/prefix' for name in SCHEMES)}")


def join(location: str | Path, *parts: str) -> str:
    """`location`/part/...; a URI keeps its query (pyarrow's options) at the end."""
    if not is_uri(location):
        return str(Path(str(location), *parts))
    scheme, netloc, path, query, _ = urlsplit(str(location))
    joined = "/".join([path.rstrip("/"), *(part.strip("/") for part in parts)])
    return urlunsplit((scheme, netloc, joined, query, ""))


def location_of(filesystem: pafs.FileSystem, path: str, like: str) -> str:
    """The location of `path` on `filesystem` (as Ray Train reports checkpoints: a URI's bucket and
    key, prefix stripped), in the form of the storage location `like` it lies under."""
    scheme = SCHEME_OF_FILESYSTEM.get(filesystem.type_name)
    if scheme is None:
        return path
    query = urlsplit(like).query if is_uri(like) else ""
    return f"{scheme}://{path.lstrip('/')}" + (f"?{query}" if query else "")


def resolve(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem holding `location`, and its path there."""
    if not is_uri(location):
        return pafs.LocalFileSystem(), absolute(location)
    check_scheme(str(location))
    try:
        return pafs.FileSystem.from_uri(str(location))
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError... for a bad URI
        raise StorageError(f"{location}: not a storage location pyarrow can open ({first_line(error)})") from None


def exists(location: str | Path) -> bool:
    filesystem, path = resolve(location)
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(location: str | Path) -> bool:
    filesystem, path = resolve(location)
    return filesystem.get_file_info(path).type == pafs.FileType.Directory


def read_bytes(location: str | Path) -> bytes:
    filesystem, path = resolve(location)
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except (FileNotFoundError, OSError) as error:
        raise StorageError(f"{location}: cannot read it ({first_line(error)}); check the location and "
                           "the storage's credentials") from None


def upload_dir(local: Path, location: str) -> None:
    """Copy a local folder's files to `location` (a URI or a path), replacing what is there."""
    filesystem, path = resolve(location)
    filesystem.create_dir(path, recursive=True)
    pafs.copy_files(str(local), path, destination_filesystem=filesystem)


def list_dirs(location: str) -> list[str]:
    """The folders directly in `location` (a URI or a path), as locations; none if it is not there."""
    filesystem, path = resolve(location)
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except FileNotFoundError:
        return []
    return [join(location, info.base_name) for info in infos if info.type == pafs.FileType.Directory]


def delete_dir(location: str) -> None:
    """Remove a folder (a URI or a path) and what it holds; nothing if it is not there."""
    filesystem, path = resolve(location)
    try:
        filesystem.delete_dir(path)
    except FileNotFoundError:
        pass


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
