"""The Xiaozhi add-on: the integration's server core as a standalone service.

It serves the devices (OTA and activation, the WebSocket channel) on the reference server's
ports and relays them to Home Assistant over the link; devices stay connected while HA restarts.
The core is the integration's own `custom_components/xiaozhi/core`, installed in the image as
the package `xiaozhi_core`; run from a checkout, it is imported from there (one copy of the code).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
import sys

CORE_PACKAGE = "xiaozhi_core"
CHECKOUT_CORE = Path(__file__).resolve().parents[2] / "custom_components" / "xiaozhi" / "core"


def import_core() -> None:
    """Make `xiaozhi_core` importable: installed, or the checkout's core (without HA)."""
    if CORE_PACKAGE in sys.modules or importlib.util.find_spec(CORE_PACKAGE) is not None:
        return
    spec = importlib.util.spec_from_file_location(
        CORE_PACKAGE,
        CHECKOUT_CORE / "__init__.py",
        submodule_search_locations=[str(CHECKOUT_CORE)],
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"no {CORE_PACKAGE} installed and none at {CHECKOUT_CORE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[CORE_PACKAGE] = module
    spec.loader.exec_module(module)


import_core()
