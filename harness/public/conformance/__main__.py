"""`python -m convbench.conformance pkg.mod:fn [more implementations] [pytest options]`: the shortcut for
`pytest --pyargs convbench.conformance --convbench-impl pkg.mod:fn ...`."""
from __future__ import annotations

import subprocess
import sys


def main(argv: list[str] | None = None) -> int:
    """Runs pytest in a fresh process: this one has imported convbench already, too early for pytest to
    rewrite the plugin's asserts."""
    argv = list(sys.argv[1:] if argv is None else argv)
    n = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    impls, rest = argv[:n], argv[n:]  # implementations first, then pytest's options
    if not impls:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    args = [sys.executable, "-m", "pytest", "--pyargs", "convbench.conformance"]
    for impl in impls:
        args += ["--convbench-impl", impl]
    return subprocess.run(args + rest).returncode


if __name__ == "__main__":
    sys.exit(main())
