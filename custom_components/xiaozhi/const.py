"""Constants for the Xiaozhi integration."""

from typing import Final

DOMAIN: Final = "xiaozhi"
MANUFACTURER: Final = "Xiaozhi"

CONF_TOKEN: Final = "token"  # the hub's device token, handed out in OTA answers
CONF_DEVICES: Final = "devices"  # device_id -> what the device told us (board, firmware)
TOKEN_BYTES: Final = 32

SIGNAL_NEW_DEVICE: Final = f"{DOMAIN}_new_device_{{}}"  # formatted with the entry id

# Options.
CONF_SILENCE_TIMEOUT: Final = "silence_timeout"  # seconds of silence that end a conversation
DEFAULT_SILENCE_TIMEOUT_S: Final = 8
MIN_SILENCE_TIMEOUT_S: Final = 3
MAX_SILENCE_TIMEOUT_S: Final = 60
