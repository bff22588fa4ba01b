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
        # string forms for the checks made on every path (pathlib objects cost more than
        # the realpath itself on a many-file patch)
        self._root = os.fspath(self.root)
        self._prefix = self._root if self._root.endswith(os.sep) else self._root + os.sep

    def resolve(self, path: str | os.PathLike[str] | None, *, must_exist: bool = False) -> Path:
        raw = os.fspath(path) if path not in (None, "") else "."
        if "\0" in raw:
            raise InvalidPath(
                f"path {raw!r} contains a NUL byte (\\u0000), which no file name can hold; "
                "remove it"
            )
        expanded = os.fspath(Path(raw).expanduser()) if raw.startswith("~") else raw
        # realpath follows every symlink that exists, including in the parent chain of a
        # path that does not exist yet, so a new file under a symlinked dir is checked too.
        # (os.path.join keeps `expanded` as it is when it is absolute.)
        real = os.path.realpath(os.path.join(self._root, expanded))
        if not self._inside(real):
            raise PathOutsideWorkspace(
                f"path {raw!r} resolves to {real}, which is outside the workspace {self.root}; "
                "use a path relative to the workspace root"
            )
        resolved = Path(real)
        if must_exist and not os.path.exists(real):
            raise FileNotFoundError(f"{self.relative(resolved)} does not exist in the workspace")
        return resolved

    def contains(self, real: Path) -> bool:
        return self._inside(os.fspath(real))

    def _inside(self, real: str) -> bool:
        return real == self._root or real.startswith(self._prefix)

    def relative(self, real: Path) -> str:
        """The workspace-relative spelling of a resolved path, as shown to models and users."""
        text = os.fspath(real)
        if text == self._root:
            return "."
        if not text.startswith(self._prefix):
            raise ValueError(f"{text!r} is not inside the workspace {self._root!r}")
        return text[len(self._prefix) :].replace(os.sep, "/")
