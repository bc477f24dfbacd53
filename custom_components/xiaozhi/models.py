"""The hub's typed config entry (the hub is its runtime data)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeassistant.config_entries import ConfigEntry

if TYPE_CHECKING:
    from .hub import XiaozhiHub

type XiaozhiConfigEntry = ConfigEntry[XiaozhiHub]
