"""Config subentry flows: add or change a cloud agent, speech service or MCP endpoint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from homeassistant.config_entries import ConfigEntryState, ConfigSubentryFlow, SubentryFlowResult
from homeassistant.const import CONF_API_KEY, CONF_LLM_HASS_API, CONF_NAME, CONF_PROMPT, CONF_URL
from homeassistant.core import HomeAssistant
from homeassistant.helpers import llm
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TemplateSelector,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
import probatio
from yarl import URL

from . import service_check
from .cloud import cosyvoice, dashscope, edge, openai_stt, paraformer
from .const import (
    CONF_BASE_URL,
    CONF_LANGUAGE,
    CONF_MAX_TOKENS,
    CONF_MEMORY,
    CONF_MODEL,
    CONF_PITCH,
    CONF_PRESET,
    CONF_RATE,
    CONF_REGION,
    CONF_SAVE_ANYWAY,
    CONF_SERVICE,
    CONF_TEMPERATURE,
    CONF_TIMEOUT,
    CONF_VOICE,
    CONF_VOLUME,
    DEFAULT_MAX_TOKENS,
    DEFAULT_SERVICE_TIMEOUT_S,
    DEFAULT_TEMPERATURE,
    ENDPOINT_URL_SCHEMES,
    EXAMPLE_ENDPOINT_URL,
    LLM_PRESETS,
    PRESET_CUSTOM,
    SERVICE_DASHSCOPE,
    SERVICE_EDGE,
    SERVICE_OPENAI,
    STT_SERVICES,
    TTS_SERVICES,
    XIAOZHI_CONSOLE,
)
from .llm_client import async_validate
from .subentry import async_create_openai_client

VALIDATION_TIMEOUT_S: Final = 10.0
MAX_TEMPERATURE: Final = 2.0
MAX_MAX_TOKENS: Final = 8192
MIN_TIMEOUT_S: Final = 0.1
MAX_TIMEOUT_S: Final = 120.0
DEFAULT_ENDPOINT_TITLE: Final = XIAOZHI_CONSOLE
# Default names and instructions, in HA's language ("zh" for any Chinese, else "en").
DEFAULT_TITLES: Final = {
    "en": {
        (SERVICE_OPENAI, "stt"): "Whisper",
        (SERVICE_DASHSCOPE, "stt"): "Paraformer",
        (SERVICE_EDGE, "tts"): "Edge TTS",
        (SERVICE_DASHSCOPE, "tts"): "CosyVoice",
    },
    "zh": {
        (SERVICE_OPENAI, "stt"): "Whisper 语音识别",
        (SERVICE_DASHSCOPE, "stt"): "Paraformer 语音识别",
        (SERVICE_EDGE, "tts"): "Edge 语音合成",
        (SERVICE_DASHSCOPE, "tts"): "CosyVoice 语音合成",
    },
}
DEFAULT_INSTRUCTIONS: Final = {
    "en": llm.DEFAULT_INSTRUCTIONS_PROMPT,
    "zh": "你是 Home Assistant 的语音助手。如实回答关于世界的问题。用纯文本回答，简单明了。",
}
# The model example where the preset suggests none: Volcengine Ark wants an endpoint ID.
MODEL_EXAMPLES: Final = {"volcengine": "ep-20250101000000-abcde"}

_PASSWORD = TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD))
_URL = TextSelector(TextSelectorConfig(type=TextSelectorType.URL))
_TIMEOUT = NumberSelector(
    NumberSelectorConfig(
        min=MIN_TIMEOUT_S,
        max=MAX_TIMEOUT_S,
        step=0.1,
        unit_of_measurement="s",
        mode=NumberSelectorMode.BOX,
    )
)


def _llm_api_selector(hass: Any) -> SelectSelector:
    """Pick any of the LLM APIs registered in HA."""
    apis = [SelectOptionDict(value=api.id, label=api.name) for api in llm.async_get_apis(hass)]
    return SelectSelector(SelectSelectorConfig(options=apis, multiple=True))


def _known_apis(hass: Any, chosen: list[str] | None) -> list[str]:
    """The chosen APIs that are still registered (a form cannot suggest the others)."""
    known = {api.id for api in llm.async_get_apis(hass)}
    return [api for api in chosen or [] if api in known]


type Check = Callable[[HomeAssistant, Mapping[str, Any]], Awaitable[str | None]]
_REGION = SelectSelector(
    SelectSelectorConfig(
        options=[*dashscope.REGION_URLS, dashscope.REGION_CUSTOM],
        translation_key=CONF_REGION,
        mode=SelectSelectorMode.LIST,
    )
)


def _slider(low: int, high: int, unit: str) -> NumberSelector:
    return NumberSelector(NumberSelectorConfig(min=low, max=high, step=1, unit_of_measurement=unit))


class _ServiceFlow(ConfigSubentryFlow):
    """What every service flow shares: the data so far, and how a flow ends."""

    def __init__(self) -> None:
        """Start with no data."""
        self._data: dict[str, Any] = {}

    @property
    def _is_new(self) -> bool:
        return self.source == "user"

    @property
    def _language(self) -> str:
        return "zh" if self.hass.config.language.lower().startswith("zh") else "en"

    def _loaded(self) -> bool:
        return self._get_entry().state is ConfigEntryState.LOADED

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Change the settings (not the provider or service they were made for)."""
        if not self._loaded():
            return self.async_abort(reason="entry_not_loaded")
        self._data = dict(self._get_reconfigure_subentry().data)
        return await self._async_step_settings()

    async def _async_step_settings(self) -> SubentryFlowResult:
        """Show the settings form of what was chosen."""
        raise NotImplementedError

    def _choice_form(
        self, key: str, options: list[str], translation_key: str
    ) -> SubentryFlowResult:
        """The first step: pick one of `options`."""
        selector = SelectSelector(
            SelectSelectorConfig(
                options=options, translation_key=translation_key, mode=SelectSelectorMode.LIST
            )
        )
        return self.async_show_form(
            step_id="user", data_schema=probatio.Schema({probatio.Required(key): selector})
        )

    def _name_field(self, default: str) -> dict[Any, Any]:
        """The name field, for a new subentry only (its title)."""
        if not self._is_new:
            return {}
        return {probatio.Required(CONF_NAME, default=default): str}

    def _finish(
        self, user_input: dict[str, Any], optional: tuple[str, ...] = ()
    ) -> SubentryFlowResult:
        """Create the subentry, or update it and end the reconfigure flow.

        Optional fields the user emptied are removed, so their defaults apply again.
        """
        title = user_input.pop(CONF_NAME, None)
        for key in optional:
            if key not in user_input:
                self._data.pop(key, None)
        self._data.update(user_input)
        if self._is_new:
            return self.async_create_entry(title=title, data=self._data)
        return self.async_update_and_abort(
            self._get_entry(), self._get_reconfigure_subentry(), data=self._data
        )


class ConversationFlow(_ServiceFlow):
    """An OpenAI-compatible conversation agent: a provider preset, then its settings."""

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Choose the provider."""
        if not self._loaded():
            return self.async_abort(reason="entry_not_loaded")
        if user_input is not None:
            preset = LLM_PRESETS[user_input[CONF_PRESET]]
            self._data = {
                CONF_PRESET: user_input[CONF_PRESET],
                CONF_BASE_URL: preset.base_url,
                CONF_MODEL: preset.model,
                CONF_PROMPT: DEFAULT_INSTRUCTIONS[self._language],
                CONF_TEMPERATURE: DEFAULT_TEMPERATURE,
                CONF_MAX_TOKENS: DEFAULT_MAX_TOKENS,
                CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
                CONF_MEMORY: True,
                CONF_TIMEOUT: DEFAULT_SERVICE_TIMEOUT_S,
            }
            return await self.async_step_settings()
        return self._choice_form(CONF_PRESET, list(LLM_PRESETS), CONF_PRESET)

    async def _async_step_settings(self) -> SubentryFlowResult:
        return await self.async_step_settings()

    async def async_step_settings(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """URL, key, model and how the agent behaves; checked with a one-token request."""
        errors: dict[str, str] = {}
        if user_input is not None:
            user_input[CONF_MAX_TOKENS] = int(user_input[CONF_MAX_TOKENS])
            user_input.setdefault(CONF_LLM_HASS_API, [])
            client = await async_create_openai_client(self.hass, user_input)
            error = await async_validate(
                client,
                model=user_input[CONF_MODEL],
                timeout=min(VALIDATION_TIMEOUT_S, float(user_input[CONF_TIMEOUT])),
            )
            if error is None:
                return self._finish(user_input, optional=(CONF_PROMPT, CONF_API_KEY))
            errors["base"] = str(error)
        custom = self._data[CONF_PRESET] == PRESET_CUSTOM
        suggested = {**self._data, **(user_input or {})}
        suggested[CONF_LLM_HASS_API] = _known_apis(self.hass, suggested.get(CONF_LLM_HASS_API))
        schema = probatio.Schema(
            {
                **self._name_field(
                    self._data[CONF_MODEL] or LLM_PRESETS[self._data[CONF_PRESET]].vendor
                ),
                probatio.Required(CONF_BASE_URL): _URL,
                # A local server (Ollama, LM Studio) takes no key.
                (probatio.Optional if custom else probatio.Required)(CONF_API_KEY): _PASSWORD,
                probatio.Required(CONF_MODEL): str,
                probatio.Optional(CONF_PROMPT): TemplateSelector(),
                probatio.Optional(CONF_LLM_HASS_API): _llm_api_selector(self.hass),
                probatio.Required(CONF_MEMORY): BooleanSelector(),
                probatio.Required(CONF_TEMPERATURE): NumberSelector(
                    NumberSelectorConfig(min=0, max=MAX_TEMPERATURE, step=0.05)
                ),
                probatio.Required(CONF_MAX_TOKENS): NumberSelector(
                    NumberSelectorConfig(
                        min=1, max=MAX_MAX_TOKENS, step=1, mode=NumberSelectorMode.BOX
                    )
                ),
                probatio.Required(CONF_TIMEOUT): _TIMEOUT,
            }
        )
        preset = LLM_PRESETS[self._data[CONF_PRESET]]
        return self.async_show_form(
            step_id="settings",
            data_schema=self.add_suggested_values_to_schema(schema, suggested),
            errors=errors,
            description_placeholders={
                "base_url": preset.base_url or "http://192.168.1.20:11434/v1",
                "model": MODEL_EXAMPLES.get(self._data[CONF_PRESET], preset.model or "qwen3:8b"),
            },
        )


class _SpeechFlow(_ServiceFlow):
    """A speech service: choose the service, then fill in its settings, checked before saving."""

    services: list[str]

    def __init__(self) -> None:
        """No input, error or offer to save anyway yet."""
        super().__init__()
        self._input: dict[str, Any] = {}
        self._errors: dict[str, str] = {}
        self._save_anyway_offered = False

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Choose the service."""
        if not self._loaded():
            return self.async_abort(reason="entry_not_loaded")
        if user_input is not None:
            self._data = {CONF_SERVICE: user_input[CONF_SERVICE]}
            return await self._async_step_settings()
        return self._choice_form(CONF_SERVICE, self.services, f"{self._subentry_type}_service")

    async def _async_step_settings(self) -> SubentryFlowResult:
        step = getattr(self, f"async_step_{self._data[CONF_SERVICE]}")
        result: SubentryFlowResult = await step()
        return result

    async def _async_check_and_finish(
        self, user_input: dict[str, Any], check: Check, optional: tuple[str, ...] = ()
    ) -> SubentryFlowResult | None:
        """Save if the check passes (or the user saves anyway); None to show the form again."""
        save_anyway = bool(user_input.pop(CONF_SAVE_ANYWAY, False))
        self._input = dict(user_input)
        if save_anyway and self._save_anyway_offered:
            return self._finish(user_input, optional)
        settings = {**self._data, **user_input}
        for key in optional:
            if key not in user_input:
                settings.pop(key, None)
        error = await check(self.hass, settings)
        if error is None:
            return self._finish(user_input, optional)
        field = CONF_VOICE if error == service_check.CheckError.UNKNOWN_VOICE else "base"
        self._errors = {field: error}
        self._save_anyway_offered = error in service_check.SAVE_ANYWAY_ERRORS
        return None

    def _service_form(
        self, step_id: str, fields: dict[Any, Any], defaults: dict[str, Any]
    ) -> SubentryFlowResult:
        title = DEFAULT_TITLES[self._language][(step_id, self._subentry_type)]
        extra: dict[Any, Any] = {}
        if self._save_anyway_offered:
            extra[probatio.Optional(CONF_SAVE_ANYWAY, default=False)] = BooleanSelector()
        schema = probatio.Schema({**self._name_field(title), **fields, **extra})
        suggested = {**defaults, **self._data, **self._input}
        if CONF_REGION in fields:
            suggested[CONF_REGION] = self._region()
        return self.async_show_form(
            step_id=step_id,
            data_schema=self.add_suggested_values_to_schema(schema, suggested),
            errors=self._errors,
            description_placeholders={
                "schemes": " / ".join(f"{scheme}://" for scheme in dashscope.URL_SCHEMES)
            },
        )

    def _region(self) -> str:
        """The region the form shows: the one just chosen, else the one the URL is."""
        if region := self._input.get(CONF_REGION):
            return str(region)
        return dashscope.region_of(self._input.get(CONF_BASE_URL, self._data.get(CONF_BASE_URL)))

    def _region_fields(self) -> dict[Any, Any]:
        """The region choice, and the URL field while the region is "custom"."""
        fields: dict[Any, Any] = {probatio.Required(CONF_REGION): _REGION}
        if self._region() == dashscope.REGION_CUSTOM:
            fields[probatio.Required(CONF_BASE_URL)] = _URL
        return fields

    async def _async_check_dashscope_and_finish(
        self, user_input: dict[str, Any], check: Check, optional: tuple[str, ...] = ()
    ) -> SubentryFlowResult | None:
        """Take the region's URL, then check and save; None to show the form again."""
        if not self._apply_region(user_input):
            return None
        return await self._async_check_and_finish(user_input, check, optional)

    def _apply_region(self, user_input: dict[str, Any]) -> bool:
        """Put the chosen region's WebSocket URL in `user_input`; False to show the form again.

        "Custom" keeps the URL typed in the field it shows (a URL of neither region stays on
        reconfigure); chosen on a form without that field, the form comes back with it.
        """
        region = user_input.pop(CONF_REGION, dashscope.REGION_MAINLAND)
        if region != dashscope.REGION_CUSTOM:
            user_input[CONF_BASE_URL] = dashscope.REGION_URLS[region]
            return True
        self._input = {**user_input, CONF_REGION: region}
        self._errors = {}
        if CONF_BASE_URL not in user_input:
            return False
        user_input[CONF_BASE_URL] = user_input[CONF_BASE_URL].strip()
        url = URL(user_input[CONF_BASE_URL])
        if url.scheme not in dashscope.URL_SCHEMES or not url.host:
            self._errors = {CONF_BASE_URL: "invalid_url"}
            return False
        return True


class SttFlow(_SpeechFlow):
    """A speech-to-text service."""

    services = STT_SERVICES

    async def async_step_openai(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """An OpenAI-compatible transcription API."""
        if user_input is not None and (
            done := await self._async_check_and_finish(
                user_input, service_check.async_check_openai_stt, optional=(CONF_LANGUAGE,)
            )
        ):
            return done
        return self._service_form(
            SERVICE_OPENAI,
            {
                probatio.Required(CONF_BASE_URL): _URL,
                probatio.Required(CONF_API_KEY): _PASSWORD,
                probatio.Required(CONF_MODEL): str,
                probatio.Optional(CONF_LANGUAGE): str,
                probatio.Required(CONF_TIMEOUT): _TIMEOUT,
            },
            {
                CONF_BASE_URL: openai_stt.DEFAULT_BASE_URL,
                CONF_MODEL: openai_stt.DEFAULT_MODEL,
                CONF_TIMEOUT: DEFAULT_SERVICE_TIMEOUT_S,
            },
        )

    async def async_step_dashscope(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Paraformer realtime recognition on Alibaba Bailian."""
        if user_input is not None and (
            done := await self._async_check_dashscope_and_finish(
                user_input, service_check.async_check_paraformer, optional=(CONF_LANGUAGE,)
            )
        ):
            return done
        return self._service_form(
            SERVICE_DASHSCOPE,
            {
                **self._region_fields(),
                probatio.Required(CONF_API_KEY): _PASSWORD,
                probatio.Required(CONF_MODEL): str,
                probatio.Optional(CONF_LANGUAGE): str,
                probatio.Required(CONF_TIMEOUT): _TIMEOUT,
            },
            {
                CONF_BASE_URL: dashscope.DEFAULT_URL,
                CONF_MODEL: paraformer.DEFAULT_MODEL,
                CONF_TIMEOUT: DEFAULT_SERVICE_TIMEOUT_S,
            },
        )


class TtsFlow(_SpeechFlow):
    """A text-to-speech service."""

    services = TTS_SERVICES

    async def async_step_edge(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Microsoft Edge read-aloud voices: no key needed; the voice is checked."""
        if user_input is not None:
            for key in (CONF_RATE, CONF_PITCH, CONF_VOLUME):
                user_input[key] = int(user_input[key])
            if done := await self._async_check_and_finish(
                user_input, service_check.async_check_edge
            ):
                return done
        return self._service_form(
            SERVICE_EDGE,
            {
                probatio.Required(CONF_VOICE): SelectSelector(
                    SelectSelectorConfig(
                        options=[voice.voice_id for voice in edge.FALLBACK_VOICES],
                        custom_value=True,
                        mode=SelectSelectorMode.DROPDOWN,
                    )
                ),
                probatio.Required(CONF_RATE): _slider(
                    edge.MIN_RATE_PERCENT, edge.MAX_RATE_PERCENT, "%"
                ),
                probatio.Required(CONF_PITCH): _slider(edge.MIN_PITCH_HZ, edge.MAX_PITCH_HZ, "Hz"),
                probatio.Required(CONF_VOLUME): _slider(
                    edge.MIN_VOLUME_PERCENT, edge.MAX_VOLUME_PERCENT, "%"
                ),
                probatio.Required(CONF_TIMEOUT): _TIMEOUT,
            },
            {
                CONF_VOICE: edge.DEFAULT_VOICE,
                CONF_RATE: 0,
                CONF_PITCH: 0,
                CONF_VOLUME: 0,
                CONF_TIMEOUT: DEFAULT_SERVICE_TIMEOUT_S,
            },
        )

    async def async_step_dashscope(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """CosyVoice on Alibaba Bailian."""
        if user_input is not None and (
            done := await self._async_check_dashscope_and_finish(
                user_input, service_check.async_check_cosyvoice
            )
        ):
            return done
        return self._service_form(
            SERVICE_DASHSCOPE,
            {
                **self._region_fields(),
                probatio.Required(CONF_API_KEY): _PASSWORD,
                probatio.Required(CONF_MODEL): str,
                probatio.Required(CONF_VOICE): str,
                probatio.Required(CONF_TIMEOUT): _TIMEOUT,
            },
            {
                CONF_BASE_URL: dashscope.DEFAULT_URL,
                CONF_MODEL: cosyvoice.DEFAULT_MODEL,
                CONF_VOICE: cosyvoice.DEFAULT_VOICE,
                CONF_TIMEOUT: DEFAULT_SERVICE_TIMEOUT_S,
            },
        )


class McpEndpointFlow(_ServiceFlow):
    """An MCP endpoint (xiaozhi.me or a xiaozhi server): HA connects out and serves tools there."""

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """The endpoint URL with its token, and which LLM APIs it may use."""
        if not self._loaded():
            return self.async_abort(reason="entry_not_loaded")
        errors: dict[str, str] = {}
        if user_input is not None:
            user_input[CONF_URL] = user_input[CONF_URL].strip()
            url = URL(user_input[CONF_URL])
            if url.scheme not in ENDPOINT_URL_SCHEMES or not url.host:
                errors[CONF_URL] = "invalid_url"
            elif not user_input.get(CONF_LLM_HASS_API):
                errors[CONF_LLM_HASS_API] = "no_llm_api"
            else:
                return self._finish(user_input)
        suggested = {CONF_LLM_HASS_API: [llm.LLM_API_ASSIST], **self._data, **(user_input or {})}
        suggested[CONF_LLM_HASS_API] = _known_apis(self.hass, suggested.get(CONF_LLM_HASS_API))
        schema = probatio.Schema(
            {
                **self._name_field(DEFAULT_ENDPOINT_TITLE),
                probatio.Required(CONF_URL): _PASSWORD,
                probatio.Required(CONF_LLM_HASS_API): _llm_api_selector(self.hass),
            }
        )
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(schema, suggested),
            errors=errors,
            description_placeholders={
                "console": XIAOZHI_CONSOLE,
                "example_url": EXAMPLE_ENDPOINT_URL,
                "schemes": " / ".join(f"{scheme}://" for scheme in ENDPOINT_URL_SCHEMES),
            },
        )

    async def _async_step_settings(self) -> SubentryFlowResult:
        return await self.async_step_user()
