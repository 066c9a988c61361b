"""Command-line overrides read the way Hydra reads them, so convbench's own checks see the values the
jobs will get: `impl=fft,mypkg.mod:my_conv` sweeps 'fft' and 'mypkg.mod:my_conv' (Hydra's *string*
form escapes the colon, 'mypkg.mod\\:my_conv', for re-parsing), and quotes are removed.

`check_command_line` runs before Hydra composes anything: every value of every key the schema knows
(single or swept) is tried against it (`harness.config.check_value`), so `batch=-1` or
`timing.min_run_time=-1` fail as one line naming the key, the value and what is allowed."""
from __future__ import annotations

from typing import Any, Iterable, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, QuotedString

from .config import check_value


def _plain(value: Any) -> Any:
    """Hydra's parsed value with quoted strings unwrapped, as the job's config will hold it."""
    if isinstance(value, QuotedString):
        return value.text
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def values(o: Override) -> list:
    """Every value an override gives its key: one, or each of a sweep (choice, range, a,b,c)."""
    return [_plain(v) for v in (o.sweep_iterator() if o.is_sweep_override() else [o.value()])]


def parse(overrides: Iterable[str]) -> list[Override]:
    return OverridesParser.create().parse_overrides(list(overrides))


def swept_values(overrides: Iterable[str], key: str) -> list:
    """Every value `key` takes in these override strings (sweeps expanded, quotes removed)."""
    found = []
    for o in parse(overrides):
        if o.key_or_group == key and not o.is_delete():
            found.extend(values(o))
    return found


def check_overrides(overrides: Iterable[str]) -> None:
    """Raise ConfigError for the first value the schema rejects. Hydra's own keys, deletions,
    interpolations and config groups are left to Hydra."""
    for o in parse(overrides):
        key = o.key_or_group
        if o.is_delete() or key.startswith("hydra") or o.package is not None:
            continue
        for v in values(o):
            if isinstance(v, str) and "${" in v:
                continue
            check_value(key, v)


def check_command_line(argv: list[str]) -> Optional[Exception]:
    """The first schema error among the command line's overrides, or None. A command line Hydra itself
    cannot parse (or --help, --cfg, ...) is left to Hydra."""
    from hydra._internal.utils import get_args_parser  # the parser hydra.main uses

    try:
        args, _ = get_args_parser().parse_known_args(argv)
    except SystemExit:
        return None
    if args.help or args.hydra_help or args.info or args.shell_completion:
        return None
    try:
        parse(args.overrides)
    except Exception:  # noqa: BLE001 - a syntax error: Hydra reports it in its own words
        return None
    try:
        check_overrides(args.overrides)
    except ValueError as exc:
        return exc
    return None
