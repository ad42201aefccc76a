"""Logging and error reporting shared by the stage scripts and the CLI.

A `MedtuneError` (bad data, bad config, missing model) is printed as one clear line and exits with
status 1; anything else is a bug and keeps its full traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from rich.console import Console
from rich.logging import RichHandler

from medtune.errors import MedtuneError

log = logging.getLogger("medtune")


def setup_logging(level: int = logging.INFO) -> None:
    handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]", handlers=[handler], force=True)
    # gguf and llama.cpp report every tensor they write or quantize at INFO
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "gguf", "llama-cpp-python"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_main(main: Callable[[], None]) -> None:
    """Run a stage or command: readable logs, and medtune's own errors without a traceback."""
    setup_logging()
    try:
        main()
    except MedtuneError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(1)
