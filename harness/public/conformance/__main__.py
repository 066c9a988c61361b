"""`python -m convbench.conformance pkg.mod:fn [more implementations] [pytest options]`: the shortcut for
`pytest --pyargs convbench.conformance --convbench-impl pkg.mod:fn ...`."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    import pytest
    argv = list(sys.argv[1:] if argv is None else argv)
    n = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    impls, rest = argv[:n], argv[n:]  # implementations first, then pytest's options
    if not impls:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    args = ["--pyargs", "convbench.conformance"]
    for impl in impls:
        args += ["--convbench-impl", impl]
    return int(pytest.main(args + rest))


if __name__ == "__main__":
    sys.exit(main())
