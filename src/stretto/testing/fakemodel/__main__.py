"""``python -m stretto.testing.fakemodel serve --script FILE [--port N] [--log FILE]``."""

from __future__ import annotations

import sys

from stretto.testing.fakemodel.serve import serve_main

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] != ["serve"]:
        usage = "serve --script FILE [--port N] [--log FILE]"
        print(f"usage: python -m stretto.testing.fakemodel {usage}", file=sys.stderr)
        sys.exit(2)
    sys.exit(serve_main(args[1:]))
