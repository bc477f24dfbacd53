"""The add-on's program for the benchmarks: its fleet limits lifted, then `python -m xiaozhi_addon`.

    python -m benchmarks.addon_process [xiaozhi_addon's arguments]

A fleet of emulated devices connects from one address; the add-on, like the hub
(`tests.conftest.allow_a_fleet`), would refuse more than 32 channels from it.
"""

from __future__ import annotations

from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "addon"))

import xiaozhi_addon  # noqa: F401 - maps the core as xiaozhi_core
from xiaozhi_addon.__main__ import main
import xiaozhi_core.mqtt_server
import xiaozhi_core.server

FLEET = 1000

xiaozhi_core.server.MAX_CHANNELS_PER_ADDRESS = FLEET
xiaozhi_core.mqtt_server.MAX_CHANNELS_PER_ADDRESS = FLEET

if __name__ == "__main__":
    main(sys.argv[1:])
