"""Protocol constants and every limit the server enforces, in one place."""

from enum import IntEnum
from typing import Final

# Endpoints (the paths the reference server uses, so only host and port change on a device).
OTA_PATH: Final = "/xiaozhi/ota/"
WEBSOCKET_PATH: Final = "/xiaozhi/v1/"
ACTIVATE_PATH: Final = OTA_PATH + "activate"  # the firmware appends "activate" to the OTA URL
VISION_PATH: Final = "/xiaozhi/vision"  # the camera's uploads (MCP `initialize` tells the device)

# Web clients cannot set WebSocket headers: they send these query parameters (the reference
# server's names); headers win when both are present.
QUERY_DEVICE_ID: Final = "device-id"
QUERY_CLIENT_ID: Final = "client-id"
QUERY_AUTHORIZATION: Final = "authorization"  # "Bearer <token>", URL-encoded
# CORS for the OTA and activate endpoints only (browser test pages post them with these headers).
CORS_ALLOWED_HEADERS: Final = (
    "Content-Type, Device-Id, Client-Id, Authorization, Activation-Version, Accept-Language"
)
CORS_ALLOWED_METHODS: Final = "GET, POST, OPTIONS"
CORS_MAX_AGE_S: Final = 600

# Binary protocol versions a device may announce (protocol.md §3.4).
PROTOCOL_VERSIONS: Final = frozenset({1, 2, 3})
DEFAULT_PROTOCOL_VERSION: Final = 1

# Audio from the device: Opus, 16 kHz mono, 60 ms frames (protocol.md §3.5).
DEVICE_SAMPLE_RATE: Final = 16000
DEVICE_CHANNELS: Final = 1
DEVICE_FRAME_DURATION_MS: Final = 60
# Audio to the device: the rate announced in our hello (24 kHz: most boards need no resampling).
REPLY_SAMPLE_RATE: Final = 24000
REPLY_FRAME_DURATION_MS: Final = 60
OPUS_SAMPLE_RATES: Final = frozenset({8000, 12000, 16000, 24000, 48000})
OPUS_FRAME_DURATIONS_MS: Final = frozenset({10, 20, 40, 60, 80, 100, 120})
MAX_OPUS_FRAME_DURATION_MS: Final = 120
SAMPLE_WIDTH: Final = 2  # 16-bit PCM

# Limits on what a device may send.
MAX_WEBSOCKET_FRAME_BYTES: Final = 65535  # the firmware never sends more in one frame
MAX_TEXT_MESSAGE_BYTES: Final = 32 * 1024  # an MCP tools/list page is < 8000 bytes
MAX_JSON_DEPTH: Final = 32
MAX_OPUS_PACKET_BYTES: Final = 4000  # 60 ms at Opus's top bitrate (510 kbit/s) is 3825 bytes
MAX_OTA_BODY_BYTES: Final = 64 * 1024  # the system-info JSON is a few KiB
BODY_READ_TIMEOUT_S: Final = 10.0  # the firmware sends its body with the headers; cut endless ones
# Floods: a device sends audio at real time (any frame length the hello announces, 10-120 ms),
# plus its buffered wake-word audio at once after the hello (up to ~2 s), and a handful of JSON
# messages per turn. Audio is limited both in packets and in audio time per second.
AUDIO_RATE_MARGIN: Final = 1.5  # times real time, for network jitter
MAX_AUDIO_BURST_S: Final = 4.0  # seconds of audio at once
MAX_TEXT_MESSAGES_PER_S: Final = 10.0
MAX_TEXT_MESSAGE_BURST: Final = 30
MAX_CONNECTIONS: Final = 200  # devices with a channel open (a new channel replaces its own old)
MAX_CHANNELS_PER_ADDRESS: Final = 32  # open or opening channels from one IP address

# The always-connected transport: MQTT 3.1.1 for JSON, encrypted UDP for audio (protocol.md §7).
# Neither port is the Mosquitto add-on's (1883 MQTT, 1884 WebSockets, 8883 TLS, 8884 TLS
# WebSockets) and the MQTT one is not 8883, which the firmware always dials with TLS. One number
# for both (TCP and UDP are apart) is one rule to open in a firewall.
DEFAULT_MQTT_PORT: Final = 8885
DEFAULT_UDP_PORT: Final = 8885
MQTT_KEEPALIVE_S: Final = 60  # advertised in the OTA answer: a dead device is seen within 90 s
MQTT_KEEPALIVE_GRACE: Final = 1.5  # MQTT 3.1.1 §3.1.2.10: silence longer than this closes
MAX_MQTT_KEEPALIVE_S: Final = 1200  # a client's own keepalive is honoured up to this
MQTT_CONNECT_TIMEOUT_S: Final = 10.0  # from TCP accept to CONNECT
MAX_MQTT_PACKET_BYTES: Final = MAX_TEXT_MESSAGE_BYTES + 1024  # a JSON message and its topic
MAX_MQTT_PACKETS_PER_S: Final = 20.0  # JSON and pings; audio goes over UDP
MAX_MQTT_PACKET_BURST: Final = 60
MQTT_SEND_TIMEOUT_S: Final = 5.0  # a device that reads nothing for this long is dropped
MQTT_PUBLISH_TOPIC: Final = "xiaozhi/device-server"  # where every device publishes
MQTT_DEVICE_TOPIC: Final = "devices/p2p/{}"  # where the server publishes (MAC with underscores)

# Timing.
HELLO_TIMEOUT_S: Final = 10.0  # the firmware waits 10 s for our hello; we wait as long for its own
IDLE_TIMEOUT_S: Final = 60.0  # close a quiet connection well before the firmware's 120 s timeout
PLAYBACK_LEAD_FRAMES: Final = 5  # frames queued on the device ahead of real time (it holds 40)
# Reply frames go this much sooner than real time, counted from the previous one, until the
# device holds MAX_PLAYBACK_LEAD_FRAMES: a sender woken late by up to this plus 5 ms still leaves
# no gap over 65 ms. A device plays what it holds after an `abort`, so the most stays small.
PACING_EARLY_S: Final = 0.005
MAX_PLAYBACK_LEAD_FRAMES: Final = 10
# Reply frames encoded ahead of their time: the codec runs off the loop, where a busy second
# core delays a frame by tens of milliseconds now and then; the pacing sends what is ready.
ENCODE_AHEAD_FRAMES: Final = 8
# A session that scores its windows for voice (the add-on's) leaves a frame to HA's endpointer
# while this many codec jobs wait: the model holds the GIL, and on a host this far behind it
# would starve the loop that relays every device's audio (at 200 devices the link fell seconds
# behind and dropped whole turns). Once the queue drains, the frames are scored here again.
MAX_SCORING_BACKLOG: Final = 64
# `tts start` goes out when the end of speech is decided, so the device switches to speaking
# while STT and the agent work; only a reply ready sooner than this waits (firmware 48142026,
# main/application.cc). The device reads our messages and frames in order on one receive task.
# `tts start` only queues SetDeviceState(speaking) for the main loop (Schedule, :556); a frame the
# receive task meets before that has run is dropped (OnIncomingAudio accepts audio only in
# `speaking`, :518). Setting the state raises MAIN_EVENT_STATE_CHANGED, handled on the main
# loop's next pass (HandleStateChangedEvent, :951): LED, status text, voice processing off, then
# ResetDecoder (:959), which clears the decode and playback queues, so frames that arrive between
# the switch and that pass are lost too. The main task runs at priority 10, above the network,
# audio (8) and LVGL (1) tasks, so the `Schedule` wakes it at once and the pass is a few hundred
# microseconds of work; its one wait is the display lock, held by LVGL while it redraws what
# changed (priority inheritance finishes that redraw at the main loop's priority). At the
# decision the device is only listening: nothing we sent is being drawn (`stt`, `llm` and the
# subtitles come after `tts start`), so at most a status-bar redraw is in progress. 15 ms covers
# that pass with a margin; not measured on hardware. No gap survives Wi-Fi bunching the two
# packets together: what protects the reply is sending `tts start` early, which this does.
TTS_START_SETTLE_S: Final = 0.015
TTS_STOP_GRACE_S: Final = 0.2  # after the reply played: clients clear their buffer on `tts stop`
MAX_REPLY_AHEAD_S: Final = 120.0  # reply audio read ahead of playback, at most
CLOSE_TIMEOUT_S: Final = 5.0


class CloseCode(IntEnum):
    """WebSocket close codes the server uses."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the hub is unloading or HA is stopping
    PROTOCOL_ERROR = 1002  # malformed JSON, binary before hello, bad framing
    UNSUPPORTED_DATA = 1003  # audio parameters we cannot decode
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    HELLO_TIMEOUT = 4000
    IDLE_TIMEOUT = 4001
    REPLACED = 4002  # the same device opened a new channel
