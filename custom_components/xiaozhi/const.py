"""Constants for the Xiaozhi integration."""

from typing import Final, NamedTuple

DOMAIN: Final = "xiaozhi"
MANUFACTURER: Final = "Xiaozhi"

CONF_TOKEN: Final = "token"  # a bound device's secret, handed out in its OTA answers
CONF_CLIENT_ID: Final = "client_id"  # the UUID a device keeps in NVS: with the MAC, who it is
CONF_CODE: Final = "code"  # the activation code, in the new device's repair (fix flow)
CONF_DEVICES: Final = "devices"  # device_id -> what the device told us (board, firmware)
TOKEN_BYTES: Final = 32

# Bound devices live in their own store, written before the device hears it is bound.
STORAGE_KEY: Final = f"{DOMAIN}.devices"
STORAGE_VERSION: Final = 1
INFO_SAVE_DELAY_S: Final = 10  # board and firmware updates are not urgent

SIGNAL_NEW_DEVICE: Final = f"{DOMAIN}_new_device_{{}}"  # formatted with the entry id
SIGNAL_TOOLS_CHANGED: Final = f"{DOMAIN}_tools_changed_{{}}"  # a device listed other tools

# The device's own tools (MCP) and its camera.
LLM_API_ID: Final = "xiaozhi_device"
LLM_API_NAME: Final = "Xiaozhi device"
CONF_VISION_ENTITY: Final = "vision_entity"  # the ai_task entity that answers about photos

# Options.
CONF_SILENCE_TIMEOUT: Final = "silence_timeout"  # seconds of silence that end a conversation
DEFAULT_SILENCE_TIMEOUT_S: Final = 8
MIN_SILENCE_TIMEOUT_S: Final = 3
MAX_SILENCE_TIMEOUT_S: Final = 60

# Each device's "End of speech" select: may a pause end the turn once the words make a command?
END_OF_SPEECH_KEY: Final = "end_of_speech"
END_OF_SPEECH_COMMAND: Final = "command"  # at a short pause, if the words make a command
END_OF_SPEECH_SILENCE: Final = "silence"  # only after the silence ("Finished speaking detection")
END_OF_SPEECH_OPTIONS: Final = [END_OF_SPEECH_COMMAND, END_OF_SPEECH_SILENCE]

# Activation (binding a new device with the code it speaks).
ACTIVATION_CODE_DIGITS: Final = 6
ACTIVATION_CODE_TTL_S: Final = 600.0  # a code, and its repair, live this long
ACTIVATION_SWEEP_INTERVAL_S: Final = 30.0  # how often expired codes and flows are removed
MAX_ACTIVATION_ATTEMPTS: Final = 5  # wrong codes before the code is thrown away
MAX_PENDING_ACTIVATIONS: Final = 32  # devices waiting for their code at once
MAX_PENDING_PER_ADDRESS: Final = 4  # of those, from one IP address
# Unknown devices' OTA checks per address and window: a waiting device checks about twice a
# minute (its activation loop), a flood is cut with 429.
MAX_UNKNOWN_CHECKINS: Final = 10
UNKNOWN_CHECKIN_WINDOW_S: Final = 60.0
MAX_TRACKED_ADDRESSES: Final = 256  # addresses whose check-ins are counted (oldest dropped)
MAX_BOARD_NAME_CHARS: Final = 40  # a device-reported board name, in titles and the registry

# Who may be added without an activation code.
CONF_AUTH_MODE: Final = "auth_mode"
AUTH_MODE_BOUND: Final = "bound"  # only devices added with their code (default)
AUTH_MODE_LOCAL_NETWORK: Final = "local_network"  # any device on a private network, no code
AUTH_MODE_ALLOW_LIST: Final = "allow_list"  # listed MACs without a code, others with one
AUTH_MODES: Final = [AUTH_MODE_BOUND, AUTH_MODE_LOCAL_NETWORK, AUTH_MODE_ALLOW_LIST]
CONF_ALLOWED_DEVICES: Final = "allowed_devices"  # MAC addresses, comma or space separated
MAX_DEVICES_WITHOUT_CODE: Final = 20  # added by the local-network mode; then codes again
ISSUE_OPEN_TO_LOCAL_NETWORK: Final = "open_to_local_network"
ISSUE_DEVICE_AUTH_FAILING: Final = "device_auth_failing"  # formatted: f"{...}_{device_id}"
ISSUE_DEVICE_IDENTITY_CHANGED: Final = "device_identity_changed"  # formatted like the above
ISSUE_UNREACHABLE_URL: Final = "unreachable_url"
ISSUE_DEVICE_WAITING: Final = "device_waiting"  # a new device's code; formatted like the above
ISSUE_PIPELINE_CANNOT_LISTEN: Final = "pipeline_cannot_listen"  # formatted like the above
# Fired when a device's Assistant cannot do voice (newly, or on a refused turn): an Activity entry.
EVENT_VOICE_UNAVAILABLE: Final = f"{DOMAIN}_voice_unavailable"
MAX_AUTH_FAILURES: Final = 3  # refused connections in a row before a bound device gets a repair

# How a device reaches the hub (a per-device select; applies from the device's next start).
CONF_TRANSPORT: Final = "transport"
TRANSPORT_WEBSOCKET: Final = "websocket"  # a connection per conversation, on HA's own port
TRANSPORT_MQTT: Final = "mqtt"  # always connected: MQTT for messages, UDP for audio
TRANSPORTS: Final = [TRANSPORT_WEBSOCKET, TRANSPORT_MQTT]
DEFAULT_TRANSPORT: Final = TRANSPORT_WEBSOCKET  # needs no port besides HA's (README)
CONF_MQTT_PASSWORD: Final = "mqtt_password"  # a bound device's MQTT secret
# The listeners of the always-connected mode (hub options; defaults in core/const.py).
CONF_ADDON_URL: Final = "addon_url"  # the add-on (or its container) that serves the devices
CONF_LINK_SECRET: Final = "link_secret"  # what the integration shows the add-on to link
CONF_MQTT_PORT: Final = "mqtt_port"
CONF_UDP_PORT: Final = "udp_port"
MQTT_LISTEN_HOST: Final[str | None] = None  # every interface, as HA's own HTTP server listens
MIN_PORT: Final = 1
MAX_PORT: Final = 65535
TLS_MQTT_PORT: Final = 8883  # the firmware dials this port with TLS, which the hub does not serve
ISSUE_MQTT_PORTS_IN_USE: Final = "mqtt_ports_in_use"
ISSUE_ADDON_SECRET_REFUSED: Final = "addon_secret_refused"  # the add-on refused the link secret

# Cloud AI services, each a config subentry of the hub (usable by any Assist pipeline).
SUBENTRY_CONVERSATION: Final = "conversation"  # an OpenAI-compatible chat-completions agent
SUBENTRY_STT: Final = "stt"
SUBENTRY_TTS: Final = "tts"
SUBENTRY_MCP_ENDPOINT: Final = "mcp_endpoint"  # HA dials out to a xiaozhi MCP endpoint
CONF_SERVICE: Final = "service"  # which speech service a stt/tts subentry uses
SERVICE_OPENAI: Final = "openai"  # stt: an OpenAI-compatible /audio/transcriptions API
SERVICE_EDGE: Final = "edge"  # tts: Microsoft Edge read-aloud voices (no key)
SERVICE_DASHSCOPE: Final = "dashscope"  # stt: Paraformer realtime; tts: CosyVoice (Alibaba Bailian)
STT_SERVICES: Final = [SERVICE_OPENAI, SERVICE_DASHSCOPE]
TTS_SERVICES: Final = [SERVICE_EDGE, SERVICE_DASHSCOPE]
# Subentry data keys (the API key is homeassistant.const.CONF_API_KEY, the LLM APIs
# homeassistant.const.CONF_LLM_HASS_API, the system prompt homeassistant.const.CONF_PROMPT).
CONF_PRESET: Final = "preset"  # which provider preset filled base URL and model
CONF_BASE_URL: Final = "base_url"
CONF_MODEL: Final = "model"
CONF_TEMPERATURE: Final = "temperature"
CONF_MAX_TOKENS: Final = "max_tokens"
CONF_MEMORY: Final = "memory"  # bool: keep a short per-device memory for this agent
CONF_LANGUAGE: Final = "language"
CONF_VOICE: Final = "voice"
# Speech services' defaults, voices and ranges are in their clients (cloud/*.py).
CONF_RATE: Final = "rate"  # Edge TTS: percent
CONF_PITCH: Final = "pitch"  # Edge TTS: Hz
CONF_VOLUME: Final = "volume"  # Edge TTS: percent
CONF_REGION: Final = "region"  # DashScope: the form's choice; base_url is derived from it
CONF_SAVE_ANYWAY: Final = "save_anyway"  # a form field only: save although the check failed
CONF_TIMEOUT: Final = "timeout"  # seconds before a request to the service is given up
DEFAULT_SERVICE_TIMEOUT_S: Final = 15.0
# MCP endpoint subentries: the URL (homeassistant.const.CONF_URL, with its token) and the LLM APIs
# served (homeassistant.const.CONF_LLM_HASS_API).
ENDPOINT_URL_SCHEMES: Final = ("ws", "wss")
# Shown in the UI through description placeholders (hassfest allows no URLs in strings).
XIAOZHI_CONSOLE: Final = "xiaozhi.me"
EXAMPLE_ENDPOINT_URL: Final = "wss://api.xiaozhi.me/mcp/?token=…"
EXAMPLE_OTA_URL: Final = "http://192.168.1.10:8123/xiaozhi/ota/"
ISSUE_ENDPOINT_REFUSED: Final = "endpoint_refused"  # formatted: f"{...}_{subentry_id}"
ISSUE_ENDPOINT_OVER_LIMIT: Final = "endpoint_over_limit"  # formatted like the above
ISSUE_API_KEY_REJECTED: Final = "api_key_rejected"  # a service refused a subentry's key


class LlmPreset(NamedTuple):
    """An OpenAI-compatible chat service: where it is and what to suggest."""

    base_url: str
    model: str  # suggested; empty where the user must name their own (an endpoint id)
    vendor: str


PRESET_CUSTOM: Final = "custom"
LLM_PRESETS: Final[dict[str, LlmPreset]] = {
    "bailian": LlmPreset(
        "https://dashscope.aliyuncs.com/compatible-mode/v1", "qwen-flash", "Alibaba Cloud"
    ),
    "deepseek": LlmPreset("https://api.deepseek.com/v1", "deepseek-chat", "DeepSeek"),
    "zhipu": LlmPreset("https://open.bigmodel.cn/api/paas/v4", "glm-4-flash", "Zhipu AI"),
    "volcengine": LlmPreset("https://ark.cn-beijing.volces.com/api/v3", "", "Volcengine"),
    "moonshot": LlmPreset("https://api.moonshot.cn/v1", "kimi-k2-turbo-preview", "Moonshot AI"),
    "openai": LlmPreset("https://api.openai.com/v1", "gpt-4o-mini", "OpenAI"),
    PRESET_CUSTOM: LlmPreset("", "", "OpenAI-compatible"),
}
DEFAULT_TEMPERATURE: Final = 0.7
DEFAULT_MAX_TOKENS: Final = 500
