"""Typed errors for bad input from a device."""

from .const import CloseCode


class XiaozhiError(Exception):
    """Base class of every error raised by the xiaozhi core."""


class ProtocolError(XiaozhiError):
    """A device broke the protocol; the connection is closed with `close_code`."""

    close_code: CloseCode = CloseCode.PROTOCOL_ERROR
    fatal = True


class MalformedMessageError(ProtocolError):
    """A text message is not JSON, not an object, or lacks a required field."""


class MalformedMcpError(MalformedMessageError):
    """An `mcp` envelope without a payload object (dropped; the channel stays open)."""

    fatal = False


class UnknownMessageTypeError(ProtocolError):
    """A well-formed message of a type this server does not know (ignored, not fatal)."""

    fatal = False


class MessageTooBigError(ProtocolError):
    """A message or audio frame exceeds its size limit."""

    close_code = CloseCode.MESSAGE_TOO_BIG


class FloodError(ProtocolError):
    """A device sends faster than any firmware would."""

    close_code = CloseCode.POLICY_VIOLATION


class FramingError(ProtocolError):
    """A binary frame does not match the negotiated protocol version."""


class UnsupportedAudioError(ProtocolError):
    """The device announced audio parameters the server cannot decode."""

    close_code = CloseCode.UNSUPPORTED_DATA


class CodecError(XiaozhiError):
    """Opus could not encode or decode a frame."""


class OtaRequestError(XiaozhiError):
    """An OTA request lacks what the firmware always sends."""


class CheckInRefusedError(XiaozhiError):
    """A gate refuses an OTA check (no Client-Id, too many unknown devices): HTTP `status`."""

    def __init__(self, status: int, message: str) -> None:
        """Refuse with an HTTP status and a short reason for the device."""
        super().__init__(message)
        self.status = status
