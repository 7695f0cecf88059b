"""MkDocs hooks for the facepcl site (``hooks:`` in mkdocs.yml).

- The CLI reference page gets the ``--help`` of ``facepcl`` and of every
  subcommand, generated at build time, so it can never fall behind the code.
- Pictures that only a trained model can make (swap grids, maps; see
  :data:`MODEL_PICTURES`) are shown when their file exists; until then the
  page says which command makes them. Any other missing picture is still an
  error in a strict build.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
from collections.abc import Iterator

CLI_MARKER = "<!-- facepcl-cli-help -->"
_SWAP = "python docs/scripts/make_swap_figure.py --model pcl-demo"
_MAPS = "python docs/scripts/make_map_figures.py --model pcl-demo"
#: Pictures (relative to docs/) that need trained weights, and the command that makes them.
MODEL_PICTURES = {
    "img/swap.png": _SWAP,
    "img/swap-turned.png": _SWAP,
    "img/map-face.png": _MAPS,
    "img/map-pose.png": _MAPS,
    "img/map-pose-by-person.png": _MAPS,
}
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)(\{[^}]*\})?")
HELP_WIDTH = 100


@contextlib.contextmanager
def _columns(width: int) -> Iterator[None]:
    # argparse wraps help to the terminal width; fix it so the page is the same on every machine.
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def cli_reference() -> str:
    """Markdown with the ``--help`` text of ``facepcl`` and of each subcommand, in ``--help`` order."""
    from facepcl.cli import SUBCOMMANDS, build_parser

    with _columns(HELP_WIDTH):
        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parts = ["## `facepcl`", "", "```text", parser.format_help().rstrip(), "```", ""]
        for name in SUBCOMMANDS:
            parts += [f"## `facepcl {name}`", "", "```text", sub.choices[name].format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def pending_pictures(markdown: str, docs_dir: str, page_dir: str = "") -> str:
    """Replace images of :data:`MODEL_PICTURES` whose files do not exist yet with a note naming the command."""

    def swap(match: re.Match) -> str:
        alt, target = match.group(1), match.group(2)
        key = os.path.normpath(os.path.join(page_dir, target)).replace(os.sep, "/")
        if key not in MODEL_PICTURES or os.path.exists(os.path.join(docs_dir, key)):
            return match.group(0)
        return (f'\n\n!!! note "Picture not made yet: {alt}"\n    It needs a trained model with its decoder. '
                f"Make it with `{MODEL_PICTURES[key]}`.\n\n")

    return _IMAGE.sub(swap, markdown)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """MkDocs hook: fill in the CLI reference; note pictures that need a trained model and are not made yet."""
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    page_dir = os.path.dirname(page.file.src_uri)
    return pending_pictures(markdown, config["docs_dir"], page_dir)
