"""The Hugging Face hub: off in every medtune process, on only for a hub model or dataset that a config names.

medtune's stages read local files, except `base` with `model.weights.source: hub` and `prepare` with
`data.source: hub`. The libraries it imports reach for the hub by themselves: peft imports bitsandbytes whenever it is
installed, and bitsandbytes (0.50, on CPUs with AVX512-BF16) asks `kernels` for a faster 4-bit kernel at import, which
looks its publisher up on the hub. So importing `medtune` sets HF_HUB_OFFLINE=1 unless the user set it, and the two hub
loaders turn the hub on around their own call with `online()`. A user's own HF_HUB_OFFLINE (0 or 1) is always kept.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

USER_SETTING = os.environ.get("HF_HUB_OFFLINE")  # read before `start_offline` sets it


def start_offline() -> None:
    """HF_HUB_OFFLINE=1 for this process and the processes it starts, unless the user chose a value."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # bitsandbytes then says on import that it could not fetch its faster CPU 4-bit kernel from the hub, and `kernels`
    # that it skipped the publisher check: medtune never downloads code at run time, so the built-in kernel is expected
    for notice in ("bitsandbytes.backends.cpu.ops", "kernels"):
        logging.getLogger(notice).setLevel(logging.ERROR)


@contextmanager
def online() -> Iterator[None]:
    """The hub reachable for the loads inside, unless the user set HF_HUB_OFFLINE.

    huggingface_hub and datasets read the variable once, when they are imported, so their copies are switched too."""
    if USER_SETTING is not None:
        yield
        return
    _set_offline(False)
    try:
        yield
    finally:
        _set_offline(True)


def _set_offline(offline: bool) -> None:
    os.environ["HF_HUB_OFFLINE"] = str(int(offline))
    for name in ("huggingface_hub.constants", "datasets.config"):
        if name in sys.modules:
            sys.modules[name].HF_HUB_OFFLINE = offline
