"""Atomic directory writes: build a folder beside its target, then swap it in with one atomic step.

A reader sees the old folder or the new one, never a missing or a half-written one — also while another
process rewrites it, when two processes rewrite it at once, and when a writer is killed at any moment.

How the swap is done, for `<parent>/<name>`:

- The new content is built in `<parent>/.<name>.tmp-<id>`, a folder its writer holds an `flock` on for as
  long as it lives (so a cleaner can tell a live writer's folder from a killed one's).
- Where the filesystem can exchange two names atomically (Linux `renameat2(RENAME_EXCHANGE)`: ext4, xfs,
  btrfs, tmpfs, overlayfs, ...), the built folder and the target trade places in one system call; the target
  stays a plain folder at a path that never changes (what a trainer, vLLM or a recorded path holds keeps
  working), and the old content, now under the temporary name, is removed afterwards.
- Elsewhere (macOS, NFS, ...) the target is a symlink to a versioned sibling `<parent>/.<name>.v-<id>`: a
  write renames its built folder to a new versioned name, and `os.replace`s a fresh symlink over the target
  (atomic on POSIX); the previous versioned folder is removed a few milliseconds later (a lookup that read
  the old link finishes first). A plain folder found at the target there (a store written before, or by a
  host that exchanges) is migrated on its next rewrite with one short gap, the only one.
- Writers of one target are serialised by a lock beside it (`<parent>/.<name>.lock`, `fcntl.flock`, plus a
  thread lock within a process), held only to create the temporary folder and to swap, not while building.
- What a killed writer leaves (`.<name>.tmp-*`, `.<name>.old-*`, `.<name>.del-*`, `.<name>.link-*`,
  unreferenced `.<name>.v-*`, a stale lock file) is removed by `clean_leftovers`, which the next write of
  the same target runs, and which the artifact store runs on each asset folder it first uses; a live
  writer's folder is never touched. A symlink left pointing at a complete new version is rolled forward.

Readers should open files by path (`target / name`): a file opened before a rewrite stays readable, but a
listing of the old folder that is still in progress when its content is removed can come up short.
POSIX only (`fcntl`)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import platform
import re
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

DIR_MODE = 0o700
FILE_MODE = 0o600
SYMLINK_GRACE_S = 0.005  # symlink swaps: how long a superseded versioned folder outlives the link to it

# `.<name>.<kind>-<id>` beside a target `<name>`, and its lock file `.<name>.lock`
LEFTOVER = re.compile(r"^\.(?P<name>.+?)(?:\.(?P<kind>tmp|v|old|del|link)-[0-9a-f]{8,32}|\.lock)$")


@contextlib.contextmanager
def atomic_directory(target: Path, owner_only: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `target` in one atomic step (see the module
    docstring). `owner_only` makes every file 0600 and folder 0700 (for folders that hold unredacted data).
    On an exception the temporary folder is removed and `target` is left as it was."""
    target = Path(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    with target_lock(target):  # a cleaner (which takes this lock) never sees the folder before it is held
        with contextlib.suppress(OSError):  # what killed writers of this target left; never blocks a write
            _clean(target, _leftovers_of(parent, target.name))
        tmp = parent / f".{target.name}.tmp-{_token()}"
        tmp.mkdir(mode=DIR_MODE)
        guard = _hold(tmp)
        _LIVE.add(str(tmp))
    committed = False
    try:
        can_exchange(tmp)  # probed once per filesystem, inside this writer's own folder
        yield tmp
        if owner_only:
            restrict(tmp)
        with target_lock(target):
            spent = _swap(tmp, target)
            committed = True
            # the previous version, no longer reachable through `target`; after a symlink swap it stays a few
            # milliseconds (held, so that no cleaner takes it sooner), for a lookup that read the old link
            graced = [p for p in spent if os.path.islink(target) and not os.path.islink(p) and os.path.isdir(p)]
            holds = [h for h in map(_try_hold, graced) if h is not None]
            _LIVE.update(map(str, graced))
        try:
            if graced:
                time.sleep(SYMLINK_GRACE_S)
            for path in spent:
                with contextlib.suppress(OSError):  # best effort: the next clean removes what is left
                    _remove(path)
        finally:
            _LIVE.difference_update(map(str, graced))
            for hold in holds:
                os.close(hold)
    finally:
        if not committed:
            with contextlib.suppress(OSError):
                _remove(tmp)
        _LIVE.discard(str(tmp))
        os.close(guard)


def replace_file(target: Path, text: str, mode: int = 0o644) -> None:
    """Write `text` to `target` in one atomic step: a reader sees the old file or the new one, never a part, and
    a crash leaves the old one. A uniquely named temporary file beside it is synced, then `os.replace`d."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{_token()}.tmp"
    try:
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(descriptor, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def remove_directory(target: Path) -> None:
    """Remove `target` — the folder, or the symlink and the versioned folder it points to — and every
    leftover of it (a live writer's temporary folder excepted), under the target's lock. Errors other than
    something being gone already are raised: a removal that silently did nothing is not a removal."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    with target_lock(target):
        linked = _linked_version(target)
        if os.path.islink(target):
            os.unlink(target)
            if linked is not None:
                _remove(linked)
        elif os.path.lexists(target):
            doomed = target.parent / f".{target.name}.del-{_token()}"
            os.rename(target, doomed)  # gone at once for readers; removed below
            _remove(doomed)
        _clean(target, _leftovers_of(target.parent, target.name))


def clean_leftovers(folder: Path, name: str | None = None) -> list[Path]:
    """Remove what killed writers left in `folder` (for the target `name` only, when given); the paths removed.
    One directory listing, and a lock per target that has leftovers: cheap enough for every start-up."""
    folder = Path(folder)
    groups: dict[str, list[str]] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                match = LEFTOVER.match(entry.name)
                if match and (name is None or match["name"] == name):
                    groups.setdefault(match["name"], []).append(entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed: list[Path] = []
    for target_name, names in sorted(groups.items()):
        with target_lock(folder / target_name):
            removed += _clean(folder / target_name, names)
    return removed


def restrict(folder: Path) -> None:
    for dirpath, _, filenames in os.walk(folder):
        os.chmod(dirpath, DIR_MODE)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), FILE_MODE)


# -- the swap ----------------------------------------------------------------------------------------------
def _swap(tmp: Path, target: Path) -> list[Path]:
    """Put the built folder `tmp` at `target` in one atomic step (lock held); what to remove afterwards."""
    parent = target.parent
    linked = _linked_version(target)
    previous = [linked] if linked is not None else []
    if _exchanges(parent):
        if not os.path.lexists(target):
            os.rename(tmp, target)  # nothing there: appears at once
            return []
        try:
            _exchange(tmp, target)  # target <-> built folder, one system call
            return [tmp, *previous]  # `tmp` is the old folder (or the old symlink) now
        except OSError as error:
            if error.errno not in _UNSUPPORTED:
                raise
            _EXCHANGE_SUPPORTED.discard(os.stat(parent).st_dev)
            _NO_EXCHANGE.add(os.stat(parent).st_dev)
    version = parent / f".{target.name}.v-{_token()}"
    os.rename(tmp, version)
    link = parent / f".{target.name}.link-{_token()}"
    os.symlink(version.name, link)  # relative: the store can be moved or mounted elsewhere
    if os.path.lexists(target) and not os.path.islink(target):
        # a plain folder here, and no exchange on this filesystem: the one gap, on migration only. A crash in
        # it is repaired by the next clean, which rolls `link` forward.
        old = parent / f".{target.name}.old-{_token()}"
        os.rename(target, old)
        previous.append(old)
    os.replace(link, target)
    return previous


def _linked_version(target: Path) -> Path | None:
    """The versioned sibling `target` links to, if it is a symlink this module made."""
    try:
        pointed = os.readlink(target)
    except OSError:  # missing, or not a symlink
        return None
    match = LEFTOVER.match(pointed)
    if "/" in pointed or not match or match["name"] != target.name or match["kind"] != "v":
        return None
    return target.parent / pointed


# -- exchange (Linux renameat2) ---------------------------------------------------------------------------
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}
_SYSCALL_RENAMEAT2 = {"x86_64": 316, "aarch64": 276, "arm64": 276, "riscv64": 276, "ppc64le": 357, "s390x": 347}
_EXCHANGE_SUPPORTED: set[int] = set()
_NO_EXCHANGE: set[int] = set()  # st_dev of filesystems found without RENAME_EXCHANGE (or forced, in tests)


def _load_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    function = getattr(libc, "renameat2", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        function.restype = ctypes.c_int
        return function
    number = _SYSCALL_RENAMEAT2.get(platform.machine())
    if number is None or not hasattr(libc, "syscall"):
        return None
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    return lambda olddir, old, newdir, new, flags: syscall(
        ctypes.c_long(number), ctypes.c_int(olddir), ctypes.c_char_p(old), ctypes.c_int(newdir), ctypes.c_char_p(new),
        ctypes.c_uint(flags))


_RENAMEAT2 = _load_renameat2()


def _exchange(a: Path, b: Path) -> None:
    if _RENAMEAT2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available here", str(a))
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a), None, str(b))


def can_exchange(folder: Path) -> bool:
    """Whether the filesystem of `folder` exchanges two names atomically. Probed once per filesystem, with two
    sub-folders of `folder` (which must be the caller's own: a writer's temporary folder)."""
    device = os.stat(folder).st_dev
    if device in _NO_EXCHANGE or device in _EXCHANGE_SUPPORTED:
        return device in _EXCHANGE_SUPPORTED
    if _RENAMEAT2 is None:
        _NO_EXCHANGE.add(device)
        return False
    a, b = Path(folder) / ".probe-a", Path(folder) / ".probe-b"
    a.mkdir(mode=DIR_MODE)
    try:
        b.mkdir(mode=DIR_MODE)
        try:
            _exchange(a, b)
            _EXCHANGE_SUPPORTED.add(device)
        except OSError as error:
            if error.errno not in _UNSUPPORTED:
                raise
            _NO_EXCHANGE.add(device)
        finally:
            b.rmdir()
    finally:
        a.rmdir()
    return device in _EXCHANGE_SUPPORTED


def _exchanges(folder: Path) -> bool:
    """What `can_exchange` found for the filesystem of `folder` (False where it was not probed)."""
    return os.stat(folder).st_dev in _EXCHANGE_SUPPORTED


# -- locks ------------------------------------------------------------------------------------------------
class _Holder:
    def __init__(self):
        self.lock = threading.RLock()
        self.users = 0
        self.depth = 0
        self.fd: int | None = None


_HOLDERS: dict[str, _Holder] = {}
_REGISTRY = threading.Lock()
_LIVE: set[str] = set()  # this process's writers' temporary folders (flock does not tell threads apart on NFS)


@contextlib.contextmanager
def target_lock(target: Path) -> Iterator[None]:
    """Serialise swaps, removals and cleans of `target` across threads and processes (re-entrant in a
    thread). The lock file `.<name>.lock` beside it is removed on release."""
    target = Path(target)
    path = target.parent / f".{target.name}.lock"
    key = str(path)
    with _REGISTRY:
        holder = _HOLDERS.setdefault(key, _Holder())
        holder.users += 1
    try:
        with holder.lock:
            holder.depth += 1
            try:
                if holder.depth == 1:
                    holder.fd = _flock(path)
                yield
            finally:
                holder.depth -= 1
                if holder.depth == 0 and holder.fd is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)  # while held: a waiter on this file sees it unlinked and retries
                    os.close(holder.fd)
                    holder.fd = None
    finally:
        with _REGISTRY:
            holder.users -= 1
            if not holder.users:
                del _HOLDERS[key]


def _flock(path: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
            return fd
        os.close(fd)  # the holder before us removed that file: lock the new one


def _hold(folder: Path) -> int:
    """An flock on `folder`, held by its writer for as long as it writes (released by the kernel if killed)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _try_hold(folder: Path) -> int | None:
    try:
        return _hold(folder)
    except OSError:
        return None


def _busy(path: Path) -> bool:
    """Whether a live writer holds `path` (a temporary or versioned folder)."""
    if str(path) in _LIVE:
        return True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# -- cleaning ---------------------------------------------------------------------------------------------
def _leftovers_of(folder: Path, name: str) -> list[str]:
    prefix = f".{name}."
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries if e.name.startswith(prefix) and (m := LEFTOVER.match(e.name)) and m["name"] == name]
    except FileNotFoundError:
        return []


def _clean(target: Path, names: list[str]) -> list[Path]:
    """Remove the leftovers `names` of `target` (its lock held); roll a pending symlink forward first."""
    parent = target.parent
    if not os.path.lexists(target):  # killed between "symlink made" and "symlink in place": finish that swap
        for name in sorted(names):
            link = parent / name
            if LEFTOVER.match(name)["kind"] == "link" and os.path.islink(link):
                pointed = os.readlink(link)
                version = LEFTOVER.match(pointed)
                if "/" not in pointed and version and version["name"] == target.name and version["kind"] == "v" \
                        and (parent / pointed).is_dir():
                    os.replace(link, target)
                    break
    keep = _linked_version(target)
    removed = []
    for name in names:
        path = parent / name
        kind = LEFTOVER.match(name)["kind"]
        if kind is None or path == keep or not os.path.lexists(path):
            continue  # the lock file (removed on release), the version in use, or gone already
        if kind != "link" and _busy(path):
            continue  # a live writer's (being written, or a superseded version in its grace period)
        _remove(path)
        removed.append(path)
    return removed


def _remove(path: Path) -> None:
    """Remove a file, symlink (not what it points to) or folder tree; something already gone is fine."""
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return

    def gone_is_fine(function, failed, error):
        error = error if isinstance(error, BaseException) else error[1]
        if not isinstance(error, FileNotFoundError):
            raise error

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=gone_is_fine)
    else:
        shutil.rmtree(path, onerror=gone_is_fine)


def _token() -> str:
    return uuid.uuid4().hex[:16]
