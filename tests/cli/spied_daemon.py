"""`agentd serve` with an import spy, for test_first_run_imports.py.

    python -m tests.cli.spied_daemon serve [flags]

On SIGUSR1 the spy is armed (and says so on stderr): from then on, every module first
imported on the main thread, the event loop's, is written to stderr as "imported on the
event loop: NAME" the moment it is imported.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

from runtime import cli
from tests.import_spy import ImportSpy

ARMED = "import spy armed"
ON_LOOP = "imported on the event loop: "


class Reporter(list[str]):
    """The spy's list of modules imported on the main thread, said on stderr as they come."""

    def append(self, name: str) -> None:
        super().append(name)
        print(ON_LOOP + name, file=sys.stderr, flush=True)


def main() -> int:
    spy = ImportSpy(lambda name: False)
    spy.on_loop = Reporter()
    sys.meta_path.insert(0, spy)

    def arm(signum: int, frame: FrameType | None) -> None:
        spy.watch = lambda name: True
        print(ARMED, file=sys.stderr, flush=True)

    signal.signal(signal.SIGUSR1, arm)
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
