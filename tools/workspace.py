"""Path confinement: every path a tool touches must resolve inside the workspace root."""

from __future__ import annotations

import os
from pathlib import Path


class PathOutsideWorkspace(ValueError):
    """A path argument resolves (possibly through a symlink) outside the workspace."""


class InvalidPath(ValueError):
    """A path argument no file can have (a NUL byte in it)."""


class Workspace:
    """The directory tree the agent may read and write.

    `resolve()` turns a model-supplied path (relative to the root, or absolute) into a real
    path and refuses anything that ends up outside the root, including via `..` or symlinks.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(os.path.realpath(root))

    def resolve(self, path: str | os.PathLike[str] | None, *, must_exist: bool = False) -> Path:
        raw = os.fspath(path) if path not in (None, "") else "."
        if "\0" in raw:
            raise InvalidPath(
                f"path {raw!r} contains a NUL byte (\\u0000), which no file name can hold; "
                "remove it"
            )
        candidate = Path(raw).expanduser()
        if not candidate.is_absolute():
            candidate = self.root / candidate
        # realpath follows every symlink that exists, including in the parent chain of a
        # path that does not exist yet, so a new file under a symlinked dir is checked too.
        real = Path(os.path.realpath(candidate))
        if not self.contains(real):
            raise PathOutsideWorkspace(
                f"path {raw!r} resolves to {real}, which is outside the workspace {self.root}; "
                "use a path relative to the workspace root"
            )
        if must_exist and not real.exists():
            raise FileNotFoundError(f"{self.relative(real)} does not exist in the workspace")
        return real

    def contains(self, real: Path) -> bool:
        return real == self.root or self.root in real.parents

    def relative(self, real: Path) -> str:
        """The workspace-relative spelling of a resolved path, as shown to models and users."""
        if real == self.root:
            return "."
        return real.relative_to(self.root).as_posix()
