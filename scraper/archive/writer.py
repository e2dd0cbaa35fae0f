"""The archive's writer process: the functions `archive.py` calls in it (a one-process
`procpool.ProcessPool`, so the compression, the digests and the file writes never run on the
event loop). The process keeps its open folder between calls; each call names the folder's
settings, so a writer process that replaces a dead one opens it again by itself.
"""

from __future__ import annotations

from scraper.archive.folder import FolderSettings, WarcFolder
from scraper.archive.records import exchange_members
from scraper.models import Archived, Exchange

_open: WarcFolder | None = None


def open_folder(settings: FolderSettings) -> list[str]:
    """Open the folder for writing: the torn files of dead writers repaired first (their
    names, as kept). Raises OSError for a folder that cannot be written."""
    folder = _folder(settings)
    repaired = folder.repair()
    folder.append([])  # the first file now, so a folder that cannot be written fails here
    return repaired


def write_exchanges(call: tuple[FolderSettings, list[Exchange]]) -> list[Archived]:
    """Write each exchange's records (its capture first); where each capture went."""
    settings, exchanges = call
    folder = _folder(settings)
    members = [exchange_members(exchange, settings.redact_auth) for exchange in exchanges]
    places = folder.append([member.data for records in members for member in records])
    archived = []
    at = 0
    for records in members:
        capture = records[0]
        file, offset, length = places[at]
        archived.append(Archived(file, offset, length, capture.date, capture.digest))
        at += len(records)
    return archived


def close_folder(settings: FolderSettings) -> None:
    """Close the file being written (it gets its final name)."""
    global _open
    if _open is not None and _open.settings == settings:
        _open.close()
        _open = None


def _folder(settings: FolderSettings) -> WarcFolder:
    global _open
    if _open is None or _open.settings != settings:
        if _open is not None:
            _open.close()
        _open = WarcFolder(settings)
    return _open
