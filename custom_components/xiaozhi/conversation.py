"""Conversation agents on OpenAI-compatible chat services (Qwen, DeepSeek, GLM, Doubao, Kimi).

The answer streams into the chat log, so a streaming TTS speaks the first sentence while the
model is still writing. A failure is answered, not raised: the device speaks what went wrong;
a rejected API key also raises a repair that asks for a new one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
import json
import logging
from typing import Any, Final, Literal

from homeassistant.components import conversation
from homeassistant.components.conversation.models import AbstractConversationAgent
from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import CONF_API_KEY, CONF_LLM_HASS_API, CONF_PROMPT, MATCH_ALL
from homeassistant.core import HomeAssistant
from homeassistant.helpers import intent, llm
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.translation import async_get_translations
import openai
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam
import probatio

from .const import (
    CONF_MAX_TOKENS,
    CONF_MEMORY,
    CONF_MODEL,
    CONF_TEMPERATURE,
    CONF_TIMEOUT,
    DEFAULT_MAX_TOKENS,
    DEFAULT_SERVICE_TIMEOUT_S,
    DEFAULT_TEMPERATURE,
    DOMAIN,
    SUBENTRY_CONVERSATION,
)
from .hub import XiaozhiConfigEntry
from .issues import async_api_key_rejected, async_delete_api_key_issue
from .llm_client import (
    ErrorKind,
    LlmError,
    ReasoningDelta,
    StreamItem,
    TextDelta,
    ToolCall,
    async_stream_chat,
    trim_history,
)
from .memory import async_get_memory, memory_prompt
from .subentry import (
    agent_device_info,
    async_add_subentry_entities,
    async_create_openai_client,
)

_LOGGER = logging.getLogger(__name__)

PARALLEL_UPDATES = 0
MAX_TOOL_ITERATIONS: Final = 10  # model calls per turn: tool call, result, ... answer
UNSUPPORTED_SCHEMA_KEYS: Final = frozenset({"oneOf", "anyOf", "allOf", "enum", "not"})
ERROR_KEY: Final = "component.{domain}.exceptions.llm_{kind}.message"


async def async_setup_entry(
    hass: HomeAssistant,
    entry: XiaozhiConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add an agent for each conversation subentry."""

    async def agents(subentry: ConfigSubentry) -> list[XiaozhiConversationEntity]:
        client = await async_create_openai_client(hass, subentry.data)
        return [XiaozhiConversationEntity(entry, subentry, client)]

    await async_add_subentry_entities(entry, SUBENTRY_CONVERSATION, async_add_entities, agents)


def _tool_param(
    tool: llm.Tool, custom_serializer: Callable[[Any], Any] | None
) -> ChatCompletionFunctionToolParam:
    schema = probatio.to_openapi(tool.parameters, custom_serializer=custom_serializer)
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description or "",
            "parameters": {k: v for k, v in schema.items() if k not in UNSUPPORTED_SCHEMA_KEYS},
        },
    }


def _messages(
    content: list[conversation.Content], memory: str | None
) -> list[ChatCompletionMessageParam]:
    """The chat log as chat-completions messages, memory added to the system prompt."""
    messages: list[ChatCompletionMessageParam] = []
    for item in content:
        match item:
            case conversation.SystemContent():
                text = f"{item.content}\n\n{memory}" if memory else item.content
                messages.append({"role": "system", "content": text})
            case conversation.UserContent():
                messages.append({"role": "user", "content": item.content})
            case conversation.AssistantContent(tool_calls=None, content=None):
                continue
            case conversation.AssistantContent():
                calls = [
                    call
                    for call in item.tool_calls or ()
                    if not call.external  # answered by someone else: not the model's history
                ]
                if calls:
                    messages.append(
                        {
                            "role": "assistant",
                            "content": item.content,
                            "tool_calls": [
                                {
                                    "id": call.id,
                                    "type": "function",
                                    "function": {
                                        "name": call.tool_name,
                                        "arguments": json.dumps(call.tool_args),
                                    },
                                }
                                for call in calls
                            ],
                        }
                    )
                elif item.content:
                    messages.append({"role": "assistant", "content": item.content})
            case conversation.ToolResultContent():
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": item.tool_call_id,
                        "content": json.dumps(item.result.data, default=str),
                    }
                )
    return trim_history(messages)


def _translation_language(language: str) -> str:
    """HA's translation file for a conversation language (zh-CN -> zh-Hans)."""
    return "zh-Hans" if language.lower().startswith("zh") else language.split("-")[0]


@dataclass
class _Turn:
    """What one turn has streamed so far."""

    spoke: bool = False
    error: LlmError | None = None


class XiaozhiConversationEntity(conversation.ConversationEntity, AbstractConversationAgent):
    """A conversation agent on an OpenAI-compatible chat-completions API."""

    _attr_has_entity_name = True
    _attr_name = None
    _attr_supports_streaming = True

    def __init__(
        self, entry: XiaozhiConfigEntry, subentry: ConfigSubentry, client: openai.AsyncOpenAI
    ) -> None:
        """Create the agent of a subentry."""
        self.entry = entry
        self.subentry = subentry
        self._attr_unique_id = subentry.subentry_id
        self._attr_device_info = agent_device_info(subentry)
        self._client = client
        self._api_key: str | None = subentry.data.get(CONF_API_KEY)  # the client's
        if subentry.data.get(CONF_LLM_HASS_API):
            self._attr_supported_features = conversation.ConversationEntityFeature.CONTROL

    @property
    def supported_languages(self) -> Literal["*"]:
        """Any language the model speaks."""
        return MATCH_ALL

    async def async_added_to_hass(self) -> None:
        """Register as an agent."""
        await super().async_added_to_hass()
        conversation.async_set_agent(self.hass, self.entry, self)

    async def async_will_remove_from_hass(self) -> None:
        """Unregister the agent."""
        conversation.async_unset_agent(self.hass, self.entry)
        await super().async_will_remove_from_hass()

    async def _async_handle_message(
        self, user_input: conversation.ConversationInput, chat_log: conversation.ChatLog
    ) -> conversation.ConversationResult:
        """Answer one request, calling Home Assistant's tools on the way."""
        data = self.subentry.data
        try:
            await chat_log.async_provide_llm_data(
                user_input.as_llm_context(DOMAIN),
                data.get(CONF_LLM_HASS_API),
                data.get(CONF_PROMPT),
                user_input.extra_system_prompt,
            )
        except conversation.ConverseError as err:
            return err.as_conversation_result()

        memory = async_get_memory(self.hass) if data.get(CONF_MEMORY) else None
        device_id = user_input.device_id
        recalled = (
            await memory.async_recall(self.subentry.subentry_id, device_id)
            if memory is not None and device_id
            else []
        )
        turn = _Turn()
        try:
            for _ in range(MAX_TOOL_ITERATIONS):
                stream = self._stream(chat_log, memory_prompt(recalled) if recalled else None)
                async for _content in chat_log.async_add_delta_content_stream(
                    self.entity_id, self._async_deltas(stream, chat_log, turn, user_input.language)
                ):
                    pass
                if turn.error is not None or not chat_log.unresponded_tool_results:
                    break
            else:
                raise LlmError(ErrorKind.TOO_MANY_STEPS)
        except LlmError as err:
            turn.error = err
        if turn.error is not None:
            _LOGGER.warning("%s: %s", self.entity_id, turn.error)
            if turn.error.kind is ErrorKind.INVALID_AUTH:
                async_api_key_rejected(self.hass, self.subentry, self._api_key)
            return await self._async_error_result(user_input, chat_log, turn.error.kind)
        async_delete_api_key_issue(self.hass, self.subentry.subentry_id)

        result = conversation.async_get_result_from_chat_log(user_input, chat_log)
        if memory is not None and device_id:
            answer = result.response.speech.get("plain", {}).get("speech", "")
            await memory.async_remember(
                self.subentry.subentry_id, device_id, user_input.text, answer
            )
        return result

    def _stream(
        self, chat_log: conversation.ChatLog, memory: str | None
    ) -> AsyncIterator[StreamItem]:
        data = self.subentry.data
        llm_api = chat_log.llm_api
        tools = (
            [_tool_param(tool, llm_api.custom_serializer) for tool in llm_api.tools]
            if llm_api is not None
            else None
        )
        return async_stream_chat(
            self._client,
            model=data[CONF_MODEL],
            messages=_messages(chat_log.content, memory),
            tools=tools or None,
            temperature=float(data.get(CONF_TEMPERATURE, DEFAULT_TEMPERATURE)),
            max_tokens=int(data.get(CONF_MAX_TOKENS, DEFAULT_MAX_TOKENS)),
            timeout=float(data.get(CONF_TIMEOUT, DEFAULT_SERVICE_TIMEOUT_S)),
        )

    async def _async_deltas(
        self,
        stream: AsyncIterator[StreamItem],
        chat_log: conversation.ChatLog,
        turn: _Turn,
        language: str,
    ) -> AsyncIterator[conversation.AssistantContentDeltaDict]:
        """The model's stream as chat-log deltas.

        A failure after some of the answer was spoken ends that answer with the error, so a
        streaming TTS says it too; before that, the caller answers with the error alone.
        """
        yield {"role": "assistant"}
        try:
            async for item in stream:
                match item:
                    case TextDelta(text=text):
                        turn.spoke = True
                        yield {"content": text}
                    case ReasoningDelta(text=text):
                        yield {"thinking_content": text}
                    case ToolCall() if chat_log.llm_api is not None:
                        tool_input = llm.ToolInput(
                            tool_name=item.name, tool_args=item.arguments, id=item.id
                        )
                        yield {"tool_calls": [tool_input]}
                    case ToolCall():
                        _LOGGER.debug("%s: ignoring tool call %s", self.entity_id, item.name)
        except LlmError as err:
            if not turn.spoke:
                raise
            turn.error = err
            yield {"content": " " + await self._async_error_message(err.kind, language)}

    async def _async_error_message(self, kind: ErrorKind, language: str) -> str:
        """What to say about a failure, in the conversation's language."""
        translations = await async_get_translations(
            self.hass, _translation_language(language), "exceptions", {DOMAIN}
        )
        key = ERROR_KEY.format(domain=DOMAIN, kind=kind)
        return translations.get(key) or kind.replace("_", " ")

    async def _async_error_result(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
        kind: ErrorKind,
    ) -> conversation.ConversationResult:
        """An error answer with speech: the pipeline speaks it on the device."""
        response = intent.IntentResponse(language=user_input.language)
        response.async_set_error(
            intent.IntentResponseErrorCode.UNKNOWN,
            await self._async_error_message(kind, user_input.language),
        )
        return conversation.ConversationResult(
            response=response, conversation_id=chat_log.conversation_id
        )
