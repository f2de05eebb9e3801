"""`evo config check [DIR]`: validate a configuration directory and print a summary or every error.

Exit 0 when the directory is accepted, 1 when it is refused.
"""
from __future__ import annotations

import argparse
import sys

from common.config import ConfigError, load_config, resolve_config_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_cmd", required=True)
    check = csub.add_parser("check", help="validate a config directory (default: the active one)")
    check.add_argument("dir", nargs="?", help="config directory (default: --config, $EVO_CONFIG_DIR, /etc/evo, packaged config/)")
    check.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from common.config.summary import summarize

    path = resolve_config_dir(args.dir or getattr(args, "config", None))
    try:
        cfg = load_config(path)
    except ConfigError as e:
        errors = getattr(e, "errors", None) or [e]
        print(f"{path}: configuration refused ({len(errors)} error{'s' if len(errors) != 1 else ''}):", file=sys.stderr)
        for err in errors:
            print(f"  {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    from common.recipes.catalog import check_recipes

    problems = check_recipes(cfg).problems()
    if problems:
        print(f"{path}: configuration refused ({len(problems)} recipe error{'s' if len(problems) != 1 else ''}):",
              file=sys.stderr)
        for line in problems:
            print(f"  RecipeError: {line}", file=sys.stderr)
        return 1
    print(summarize(cfg))
    return 0
