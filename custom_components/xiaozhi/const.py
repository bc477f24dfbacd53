"""Constants for the Xiaozhi integration."""

from typing import Final

DOMAIN: Final = "xiaozhi"

CONF_TOKEN: Final = "token"  # the hub's device token, handed out in OTA answers
TOKEN_BYTES: Final = 32
