"""The xiaozhi server core: protocol, codecs, sessions, OTA, endpoints and transports.

Imports nothing from Home Assistant, and only relative imports inside, so the same code runs in the
integration and in the add-on. Its client side, the device emulator, lives outside the integration
in `tools/`.
"""

from .const import ACTIVATE_PATH, OTA_PATH, WEBSOCKET_PATH, CloseCode
from .errors import ProtocolError, XiaozhiError
from .host import Connection, ConnectionHandler, DeviceGate, Session, SessionHandler
from .mqtt_server import DeviceConnection, MqttUdpServer
from .ota import Activation, MqttConfig, OtaAnswer, OtaRequest, WebsocketConfig
from .server import XiaozhiServer
from .session import (
    DeviceIdentity,
    DeviceSession,
    SessionEnded,
    SessionEvent,
    SessionStarted,
    SessionState,
)

__all__ = [
    "ACTIVATE_PATH",
    "OTA_PATH",
    "WEBSOCKET_PATH",
    "Activation",
    "CloseCode",
    "Connection",
    "ConnectionHandler",
    "DeviceConnection",
    "DeviceGate",
    "DeviceIdentity",
    "DeviceSession",
    "MqttConfig",
    "MqttUdpServer",
    "OtaAnswer",
    "OtaRequest",
    "ProtocolError",
    "Session",
    "SessionEnded",
    "SessionEvent",
    "SessionHandler",
    "SessionStarted",
    "SessionState",
    "WebsocketConfig",
    "XiaozhiError",
    "XiaozhiServer",
]
