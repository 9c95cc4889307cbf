"""The one exception type for errors a user can cause; the CLI prints it as one line."""
from __future__ import annotations

import errno
import os


class ImxlateError(Exception):
    """A problem with the user's input, files or options, with a message that says what to do."""


# What to do about a failed file operation, by its errno; the rest say "check the path".
_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space or write somewhere else",
    errno.EDQUOT: "the disk quota is used up: free some space or write somewhere else",
    errno.EACCES: "no permission: choose a place you can write to (or read from)",
    errno.EPERM: "not permitted: choose a place you can write to (or read from)",
    errno.EROFS: "the file system is read-only: choose another place",
    errno.ENOTDIR: "part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "it is a folder, not a file: choose another path",
    errno.EEXIST: "it already exists: choose another path",
    errno.ENOENT: "a folder on the way does not exist or cannot be created there: choose another path",
    errno.ELOOP: "it is a symbolic link that loops: fix or remove the link",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
    errno.EIO: "the device reported an input/output error: check the disk",
}


def os_error_message(e: OSError, doing: str | None = None) -> str:
    """One line for an OSError: what failed, on which path, why, and what to do."""
    path = e.filename if e.filename is not None else None
    what = f"{doing} failed" if doing else "a file operation failed"
    where = f" ({path})" if path is not None and (doing is None or str(path) not in doing) else ""
    why = e.strerror or (os.strerror(e.errno) if e.errno else type(e).__name__)
    advice = _ADVICE.get(e.errno, "check the path and try again")
    return f"{what}{where}: {why}; {advice}"


def from_os_error(e: OSError, doing: str | None = None, note: str | None = None) -> ImxlateError:
    """An ImxlateError for an OSError; `note` adds what state things are in (e.g. '3 images were written')."""
    msg = os_error_message(e, doing)
    return ImxlateError(f"{msg}; {note}" if note else msg)


def missing_path_message(path) -> str:
    """Why `path` is neither a file nor a folder: a looping or dangling link, another kind of file, or absent."""
    path = os.fspath(path)
    if os.path.islink(path):
        try:
            os.stat(path)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return f"{path} is a symbolic link that loops (it leads back to itself); fix or remove the link"
            return f"{path} is a symbolic link to {os.readlink(path)}, which does not exist"
    if os.path.lexists(path):
        return f"{path} is not a regular file or folder (a device, pipe or socket); give an image file or a folder"
    return f"{path} does not exist"
