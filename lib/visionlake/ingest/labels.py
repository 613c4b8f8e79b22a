"""Pure label and split derivation from source paths, hashes and manifests."""
from __future__ import annotations

import re
from typing import Iterable, Optional

ARCHIVE_MEMBER_SEPARATOR = "!/"  # "<archive uri>!/<member path>", as in jar: URLs


def path_parts(source_path: str) -> list[str]:
    """Folder and file names of a source path, archive members included (scheme and host dropped)."""
    without_scheme = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*:(//[^/]*)?", "", source_path)
    return [part for part in re.split(r"/|!/", without_scheme) if part]


ARCHIVE_PATTERN = r"(?i)\.(tar|tar\.gz|tgz|tar\.bz2|tbz2|zip)$"
_ARCHIVE_NAME = re.compile(ARCHIVE_PATTERN)


def label_from_path(source_path: str, source: str, pattern: Optional[re.Pattern] = None, root: str = "",
                    split_folders: Iterable[str] = ()) -> Optional[str]:
    """The label name a path carries.

    ``folder``: the first folder below ``root`` (the source), as torchvision's ``ImageFolder`` and Keras'
    ``image_dataset_from_directory`` read a class-folder tree; files nested deeper keep that class. Archives are
    containers, not classes, so their names are skipped, as is an archive's wrapping folder named like it
    (``parts.tar.gz!/parts/...``, what ``tar czf parts.tar.gz parts/`` makes), and so are the ``split_folders``
    names (train/test/...) that precede the class. ``parent_folder``: the folder directly holding the file.
    ``regex``: the group ``label`` of the file name. A file with no folder below the root has no folder label.
    """
    parts = path_parts(source_path)
    if source in ("folder", "parent_folder"):
        root_parts = path_parts(root)
        below_root = len(root_parts) if parts[:len(root_parts)] == root_parts else 0
        folders, wrapper = [], None
        for position, part in enumerate(parts[:-1]):
            if _ARCHIVE_NAME.search(part):
                wrapper = _ARCHIVE_NAME.sub("", part)  # the archive's stem: a first folder of that name wraps it
                continue
            if position >= below_root and part != wrapper:
                folders.append(part)
            wrapper = None
        if source == "parent_folder":
            return folders[-1] if folders else None
        skipped = {name.lower() for name in split_folders}
        while folders and folders[0].lower() in skipped:
            folders = folders[1:]
        return folders[0] if folders else None
    if source == "regex":
        if pattern is None:
            raise ValueError("label source 'regex' needs a compiled pattern")
        match = pattern.search(parts[-1]) if parts else None
        return match.group("label") if match else None
    return None  # "manifest": labels come with the records


def split_from_path(source_path: str, source_names: dict[str, str]) -> Optional[str]:
    """The split named by the nearest enclosing folder that is a known split name (train/test/...)."""
    for part in reversed(path_parts(source_path)[:-1]):
        split = source_names.get(part.lower())
        if split:
            return split
    return None


def _natural_key(name: str) -> tuple:
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def merge_label_names(known: list[str], discovered: Iterable[str]) -> list[str]:
    """Keeps known names at their indices and appends new ones in natural order, so labels never renumber."""
    new = sorted(set(discovered) - set(known), key=_natural_key)
    return list(known) + new


def hash_fraction(content_hash: str, salt: int = 0) -> float:
    """A uniform number in [0, 1) drawn from the content hash; ``salt`` picks an independent slice of it."""
    start = 12 * salt
    return int(content_hash[start:start + 12], 16) / float(16 ** 12)


def assign_split(content_hash: str, ratios: dict[str, float]) -> str:
    """Deterministic split by content hash: the same pixels always land in the same split."""
    fraction, cumulative = hash_fraction(content_hash), 0.0
    ordered = [(name, ratios.get(name, 0.0)) for name in ("train", "val", "test")]
    for name, ratio in ordered:
        cumulative += ratio
        if fraction < cumulative:
            return name
    return next(name for name, ratio in reversed(ordered) if ratio > 0)


def assign_source_split(source_split: str, content_hash: str, val_from_train: float) -> str:
    """The source layout's split, with a hash-chosen share of train moved to val when the source has no val."""
    if source_split == "train" and hash_fraction(content_hash, salt=1) < val_from_train:
        return "val"
    return source_split
