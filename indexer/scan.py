"""Find the audio files under one or more roots: the producer stage of the indexing pipeline.

A file is audio by its extension, or, when the extension says nothing, by its first bytes (a WAV
renamed ``track.bak`` is still found). Directory symlinks are followed, but a directory already seen
(same device and inode) is not entered again, so symlink loops end; two paths to the same file are
indexed once. Hidden entries (".name") and system folders (``@eaDir``, ``$RECYCLE.BIN``, ...) are skipped.
Whatever cannot be read is reported, not raised.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

AUDIO_EXTENSIONS = frozenset(
    {".mp3", ".flac", ".ogg", ".oga", ".opus", ".wav", ".wave", ".aif", ".aiff", ".aifc",
     ".m4a", ".m4b", ".mp4", ".aac", ".alac", ".wma", ".wv", ".ape", ".mka", ".caf", ".w64", ".rf64"}
)
# Extensions that are never audio: not even sniffed (lyrics, covers, playlists, rips' logs, ...).
NOT_AUDIO_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".txt", ".nfo", ".log", ".cue",
     ".m3u", ".m3u8", ".pls", ".pdf", ".md", ".json", ".xml", ".html", ".htm", ".sfv", ".md5", ".lrc",
     ".db", ".ini", ".doc", ".docx", ".zip", ".rar", ".7z", ".py", ".sh", ".exe", ".dll", ".iso"}
)
SYSTEM_NAMES = frozenset(
    {"@eaDir", "$RECYCLE.BIN", "System Volume Information", "lost+found", "__MACOSX", "Thumbs.db",
     "desktop.ini", "#recycle", "#snapshot", ".Trash-1000"}
)
SNIFF_BYTES = 12


def sniff_audio(head: bytes) -> bool:
    """Whether a file's first bytes look like an audio container or stream."""
    if head[:4] == b"RIFF" and head[8:12] in (b"WAVE", b"RF64"):
        return True
    if head[:3] == b"ID3" or head[:4] in (b"fLaC", b"OggS", b"RF64", b"caff", b"wvpk", b"MAC "):
        return True
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return True
    if head[4:8] == b"ftyp" and head[8:11] in (b"M4A", b"M4B", b"mp4", b"iso", b"dash"):
        return True
    if head[:16].startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):  # ASF (wma)
        return True
    # MPEG audio frame sync (11 bits set) with a valid layer, or AAC ADTS.
    return len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0 and (head[1] & 0x06) != 0


@dataclass(frozen=True)
class FoundFile:
    path: str  # absolute, as reached from the root (not symlink-resolved)
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    files: list[FoundFile] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    skipped_hidden: int = 0


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name in SYSTEM_NAMES


def scan(roots: Iterable[str | os.PathLike], *, exclude: Iterable[str | os.PathLike] = ()) -> ScanResult:
    """Every audio file under ``roots`` (sorted walk, deterministic), plus the paths that could not be read.

    ``exclude``: directories never entered (the library directory itself, when it lies under a root).
    """
    result = ScanResult()
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: dict[tuple[int, int], int] = {}  # (device, inode) -> position in result.files
    excluded = {os.path.realpath(p) for p in exclude}
    for root in roots:
        root = os.path.abspath(os.path.expanduser(str(root)))
        try:
            st = os.stat(root)
        except OSError as exc:
            result.problems.append((root, f"cannot read: {exc.strerror or exc}"))
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk(root, result, seen_dirs, seen_files, excluded)
        else:  # a root may be a single file
            _consider_file(root, os.path.basename(root), st, result, seen_files, explicit=True)
    return result


def _walk(root: str, result: ScanResult, seen_dirs, seen_files, excluded) -> None:
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            st = os.stat(directory)
        except OSError as exc:
            result.problems.append((directory, f"cannot read: {exc.strerror or exc}"))
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs or os.path.realpath(directory) in excluded:
            continue  # a symlink loop, a second link to a folder already walked, or the library itself
        seen_dirs.add(key)
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            result.problems.append((directory, f"cannot list folder: {exc.strerror or exc}"))
            continue
        subdirs = []
        for entry in entries:
            if is_hidden(entry.name):
                result.skipped_hidden += 1
                continue
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError as exc:
                reason = "broken symlink" if entry.is_symlink() else f"cannot read: {exc.strerror or exc}"
                result.problems.append((entry.path, reason))
                continue
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(entry.path)
            elif stat.S_ISREG(st.st_mode):
                _consider_file(entry.path, entry.name, st, result, seen_files)
        stack.extend(reversed(subdirs))  # depth-first, in name order


def _consider_file(path: str, name: str, st: os.stat_result, result: ScanResult, seen_files,
                   explicit: bool = False) -> None:
    ext = os.path.splitext(name)[1].lower()
    if ext in NOT_AUDIO_EXTENSIONS and not explicit:
        return
    if ext not in AUDIO_EXTENSIONS and not explicit:
        try:
            with open(path, "rb") as f:
                head = f.read(SNIFF_BYTES)
        except OSError as exc:
            result.problems.append((path, f"cannot read: {exc.strerror or exc}"))
            return
        if not sniff_audio(head):
            return
    key = (st.st_dev, st.st_ino)
    found = FoundFile(path, st.st_size, st.st_mtime_ns)
    if key not in seen_files:
        seen_files[key] = len(result.files)
        result.files.append(found)
    elif os.path.realpath(path) == path:
        # The same file reached twice (symlink, hard link): its own path wins over a link's.
        result.files[seen_files[key]] = found
