"""Entry point of the `mailctl` console script.

Read commands that scripts call in loops (`get-popsettings --output json`) are answered by
mailctl.fast without importing typer, rich or pydantic when a validated copy of the settings
is cached; everything else goes through the full command line (mailctl.cli.run).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    # What mailctl writes under the home (settings, secrets, exports) is the owner's only;
    # server.runtime.filemodes.UMASK, not imported here to keep the fast path light.
    os.umask(0o077)
    from mailctl import fast

    code = fast.answer(args)
    if code is None:
        from mailctl.cli import run

        code = run(args)
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
