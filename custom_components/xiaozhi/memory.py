"""Short-term memory of a conversation agent: the last exchanges with each device.

No LLM summary: the memory is the last few exchanges, each cut short, kept per agent (config
subentry) and device in one store, and handed to the model in its system prompt. It carries
context across conversations (HA's chat log carries it within one).
"""

from __future__ import annotations

import asyncio
from typing import Final, TypedDict

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.singleton import singleton
from homeassistant.helpers.storage import Store
from homeassistant.util.hass_dict import HassKey

from .const import DOMAIN

STORAGE_KEY: Final = f"{DOMAIN}.memory"
STORAGE_VERSION: Final = 1
SAVE_DELAY_S: Final = 10
MAX_EXCHANGES: Final = 6  # per agent and device, oldest dropped first
MAX_TEXT_CHARS: Final = 200  # of each side of an exchange
MAX_DEVICES: Final = 50  # per agent, least recently used dropped first
DATA_MEMORY: HassKey[Memory] = HassKey(f"{DOMAIN}_memory")
PROMPT_HEADER: Final = (
    "Earlier exchanges with the user of this device (oldest first); use them as context:"
)


class Exchange(TypedDict):
    """One user request and the agent's answer."""

    user: str
    assistant: str


type MemoryData = dict[str, dict[str, list[Exchange]]]  # subentry id -> device id -> exchanges


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 1] + "…"


class Memory:
    """The memory of every agent, loaded once, saved shortly after each change."""

    def __init__(self, hass: HomeAssistant) -> None:
        """Create the memory; it loads on first use."""
        self._store: Store[MemoryData] = Store(hass, STORAGE_VERSION, STORAGE_KEY)
        self._data: MemoryData | None = None
        self._lock = asyncio.Lock()

    async def _async_data(self) -> MemoryData:
        async with self._lock:
            if self._data is None:
                self._data = await self._store.async_load() or {}
            return self._data

    async def async_recall(self, subentry_id: str, device_id: str) -> list[Exchange]:
        """The exchanges an agent remembers with a device."""
        data = await self._async_data()
        return list(data.get(subentry_id, {}).get(device_id, []))

    async def async_remember(
        self, subentry_id: str, device_id: str, user: str, assistant: str
    ) -> None:
        """Add an exchange, keeping only the newest ones."""
        agent = (await self._async_data()).setdefault(subentry_id, {})
        exchanges = agent.pop(device_id, [])  # re-inserted last: the most recently used
        exchanges.append(Exchange(user=_cut(user), assistant=_cut(assistant)))
        agent[device_id] = exchanges[-MAX_EXCHANGES:]
        while len(agent) > MAX_DEVICES:
            del agent[next(iter(agent))]
        self._async_schedule_save()

    async def async_forget(self, subentry_id: str) -> None:
        """Forget everything an agent remembers."""
        if (await self._async_data()).pop(subentry_id, None) is not None:
            self._async_schedule_save()

    async def async_remove(self) -> None:
        """Forget everything and delete the stored file."""
        self._data = {}
        await self._store.async_remove()

    @callback
    def _async_schedule_save(self) -> None:
        self._store.async_delay_save(lambda: self._data or {}, SAVE_DELAY_S)


@singleton(DATA_MEMORY)
def async_get_memory(hass: HomeAssistant) -> Memory:
    """The integration's one memory store."""
    return Memory(hass)


def memory_prompt(exchanges: list[Exchange]) -> str:
    """The system-prompt section that hands the memory to the model."""
    lines = [PROMPT_HEADER]
    for exchange in exchanges:
        lines.append(f"User: {exchange['user']}")
        lines.append(f"Assistant: {exchange['assistant']}")
    return "\n".join(lines)
