"""The `agentd` command (and `python -m runtime`): the command line, `runtime.cli`, loaded
with the garbage collector paused.

Start-up makes tens of thousands of objects that live as long as the process (modules,
classes, validators) and next to no garbage, and collecting while they pile up scans them
again and again: ~3 ms of `agentd serve`'s start-up on this machine for the command line's
own imports alone (`benchmarks/startup_bench.py --instructions`: -24 M). `agentd serve` and
`agentd connect` keep the collector paused until the daemon listens
(`cli.resume_gc_after_start` then freezes what start-up made); every other command resumes
it before it runs (`cli.main`).
"""

from __future__ import annotations

import gc


def main() -> None:
    gc.disable()
    from runtime.cli import entry

    entry()


if __name__ == "__main__":
    main()
