"""Where the configs are, so convbench runs from any folder: the built-in ones ship inside the package
(setuptools maps conf/ to `harness.conf`, pyproject.toml) or sit in a checkout's conf/; a user's own
suites and launchers live in their project, in ./conf or ./convbench, which the app's search path
(conf/config.yaml: hydra.searchpath) adds to the built-in groups, and where capture writes."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

_HERE = Path(__file__).resolve().parent
PACKAGED = _HERE / "conf"          # an installed wheel
CHECKOUT = _HERE.parent / "conf"   # a checkout, or its editable install
USER_DIRS = ("conf", "convbench")  # relative to the working directory, as hydra.searchpath names them


def builtin_dir() -> Path:
    """The folder holding config.yaml and the built-in groups (suite/, launcher/)."""
    return PACKAGED if (PACKAGED / "config.yaml").is_file() else CHECKOUT


def user_dirs(cwd: Optional[Path] = None) -> list[Path]:
    """The user's config folders that exist in `cwd`, in search-path order."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    return [cwd / d for d in USER_DIRS if (cwd / d).is_dir()]


def capture_dir(cwd: Optional[Path] = None) -> Path:
    """Where a captured suite goes by default: ./convbench/suite when the project has a convbench/
    folder, else ./conf/suite (in a checkout, that is the built-in suite folder itself)."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    return cwd / ("convbench" if (cwd / "convbench").is_dir() else "conf") / "suite"


def on_search_path(suite_dir: Path, cwd: Optional[Path] = None) -> bool:
    """Whether `suite=NAME` finds a suite in `suite_dir` without --config-dir."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    roots = [builtin_dir(), *(cwd / d for d in USER_DIRS)]
    return suite_dir.name == "suite" and any(suite_dir.resolve().parent == r.resolve() for r in roots)
