"""The image ships agentd compiled to bytecode, so a container's first start does not compile it.

pip compiles what it installs unless told not to. Run without bytecode (a source checkout under
PYTHONDONTWRITEBYTECODE=1), agentd compiles its own modules on every start: ~140 ms more to
the first /readyz on the development machine.
"""

from __future__ import annotations

import re

from tests.image.test_dockerfile import DOCKERFILE, parse_instructions


def test_the_wheel_is_installed_with_bytecode() -> None:
    instructions = parse_instructions(DOCKERFILE.read_text())
    installs = [
        rest
        for kw, rest in instructions
        if kw == "RUN" and re.search(r"\bpip\b.*\binstall\b", rest)
    ]
    assert any("/wheels/" in rest for rest in installs)  # agentd itself, as a wheel
    assert not any("--no-compile" in rest for rest in installs)
    settings = " ".join(rest for kw, rest in instructions if kw in ("ENV", "ARG"))
    assert "PIP_NO_COMPILE" not in settings
