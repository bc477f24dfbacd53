"""Constants for the Xiaozhi integration."""

from typing import Final

DOMAIN: Final = "xiaozhi"
MANUFACTURER: Final = "Xiaozhi"

CONF_TOKEN: Final = "token"  # the hub's device token, handed out in OTA answers
CONF_DEVICES: Final = "devices"  # device_id -> what the device told us (board, firmware)
TOKEN_BYTES: Final = 32

SIGNAL_NEW_DEVICE: Final = f"{DOMAIN}_new_device_{{}}"  # formatted with the entry id
