"""Command line: ``python -m seqblocks {info,bench,check}``."""

from __future__ import annotations

import json
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = ("usage: python -m seqblocks {info,bench,check} [options]\n"
             "  info   CPU features, ISA in use, threads\n"
             "  bench  seqblocks vs NumPy vs PyTorch timing table (python -m seqblocks bench --help)\n"
             "  check  every op on every backend and ISA vs the float64 reference; exit 1 if out of tolerance")
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "info":
        import seqblocks

        print(json.dumps(seqblocks.cpu_info(), indent=2))
        return 0
    if command == "bench":
        from . import _bench as bench

        return bench.main(rest)
    if command == "check":
        from . import check

        return check.main(rest)
    print(f"python -m seqblocks: unknown command {command!r}\n{usage}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
