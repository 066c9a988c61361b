"""Are a sweep's implementation names valid? Decided before any job, without importing a plug-in
into this process (under the basic launcher it is also the job process).

Built-in and entry-point names are known here (entry points are listed, not loaded). Whatever needs
a plug-in import (`plugins=[...]`, `package.module:function`) is checked in a short-lived process
(`python -m harness.measure.names`) that imports and resolves them: a plug-in that crashes, exits
or patches torch while being imported cannot reach the sweep."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from harness.config import check_impl, import_plugins

from .supervise import STARTUP_S, describe_exit

BAD_NAME = 2  # the checking process's exit status for a name or plug-in the message explains


def check_impls(impls: Sequence[str], plugins: Sequence[str] = ()) -> None:
    """Raise ValueError (UnknownImplementation, a plug-in that cannot be imported or crashes while
    imported) unless every name in `impls` resolves once `plugins` are imported."""
    impls, plugins = list(dict.fromkeys(str(i) for i in impls)), [str(p) for p in plugins]
    if not plugins and not any(":" in i for i in impls):
        import implementations
        known = set(implementations.names())
        for impl in impls:
            if impl not in known:
                check_impl(impl)  # raises, listing the known names; loads nothing for an unknown name
        return
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, *sys.path, env.get("PYTHONPATH", "")]))
    try:
        proc = subprocess.run([sys.executable, "-X", "faulthandler", "-m", "harness.measure.names",
                               json.dumps([impls, plugins])],
                              capture_output=True, text=True, env=env, timeout=STARTUP_S)
    except subprocess.TimeoutExpired:
        raise ValueError(f"plugins: importing {plugins} did not finish within {STARTUP_S:g} s") from None
    if proc.returncode == 0:
        return
    if proc.returncode == BAD_NAME:
        raise ValueError(proc.stdout.strip().splitlines()[-1])
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip() and not line.startswith("Extension modules")]
    fatal = next((i for i, line in enumerate(lines) if line.startswith("Fatal Python error")), None)
    last = " | ".join(lines[fatal:fatal + 4] if fatal is not None else lines[-4:])[:600]
    raise ValueError(f"plugins: the process importing {', '.join(plugins) or 'the modules'} to check "
                     f"impl={','.join(impls)} {describe_exit(proc.returncode)}: {last or 'no stderr'}")


def main(argv: Sequence[str]) -> int:
    impls, plugins = json.loads(argv[0])
    try:
        import_plugins(plugins)
        for impl in impls:
            check_impl(impl)
    except ValueError as exc:
        print(str(exc).replace("\n", " "))
        return BAD_NAME
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
