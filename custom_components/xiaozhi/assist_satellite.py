"""Every xiaozhi device is an Assist satellite: the voice loop, top to bottom.

Device events (listen, audio, abort) come in through the hub; pipeline events go out as protocol
messages: STT text -> `stt`; the agent's answer -> `llm` (emotion); TTS -> `tts start`,
`sentence_start`, paced Opus audio, `tts stop`. This is the one place that maps pipeline events to
the device protocol, whatever host or transport carries the session.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Coroutine
from dataclasses import dataclass, field
import logging
from typing import Any, Final

from homeassistant.components.assist_pipeline import PipelineEvent, PipelineEventType
from homeassistant.components.assist_pipeline.vad import VadSensitivity
from homeassistant.components.assist_satellite import (
    AssistSatelliteAnnouncement,
    AssistSatelliteConfiguration,
    AssistSatelliteEntity,
    AssistSatelliteEntityDescription,
    AssistSatelliteEntityFeature,
    AssistSatelliteWakeWord,
)
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import CONF_SILENCE_TIMEOUT, DEFAULT_SILENCE_TIMEOUT_S, DOMAIN
from .core import (
    DeviceSession,
    SessionEnded,
    SessionEvent,
    SessionStarted,
    SessionState,
    XiaozhiError,
)
from .core.const import CloseCode
from .core.messages import Abort, Listen, ListenMode, ListenState
from .core.sentences import SentenceSplitter, split_sentences
from .core.timings import Stage, TurnTimings
from .core.vad import TRAILING_SILENCE_S, EndpointEvent, SpeechEndpointer
from .devices import XiaozhiDevice
from .entity import XiaozhiEntity, async_add_device_entities
from .hub import XiaozhiConfigEntry
from .media import TTS_OPTIONS, tts_pcm, url_pcm

_LOGGER = logging.getLogger(__name__)

MAX_QUEUED_MIC_CHUNKS: Final = 100  # 6 s of 60 ms frames waiting for the pipeline
FIRMWARE_WAKE_WORD: Final = AssistSatelliteWakeWord(
    id="xiaozhi", wake_word="你好小智", trained_languages=["zh"]
)
EMOTION_DONE: Final = "happy"
EMOTION_FAILED: Final = "confused"
ERROR_STATUS: Final = {"zh": "错误", "en": "Error"}
NO_TEXT_ERROR: Final = "stt-no-text-recognized"


async def async_setup_entry(
    hass: HomeAssistant,
    entry: XiaozhiConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the satellite of each device."""
    async_add_device_entities(
        hass, entry, async_add_entities, lambda device: [XiaozhiSatellite(entry, device)]
    )


@dataclass
class _Turn:
    """State of one pipeline run."""

    session: DeviceSession
    tts_token: str | None = None
    reply: asyncio.Task[None] | None = None
    subtitles: deque[str] = field(default_factory=deque)
    splitter: SentenceSplitter = field(default_factory=SentenceSplitter)
    streaming: bool = False
    error: tuple[str, str] | None = None
    outbox: list[asyncio.Task[None]] = field(default_factory=list)
    timings: TurnTimings = field(default_factory=TurnTimings)


class XiaozhiSatellite(XiaozhiEntity, AssistSatelliteEntity):
    """A xiaozhi device as an Assist satellite."""

    entity_description = AssistSatelliteEntityDescription(key="assist_satellite")
    _attr_name = None
    _attr_supported_features = (
        AssistSatelliteEntityFeature.ANNOUNCE | AssistSatelliteEntityFeature.START_CONVERSATION
    )

    def __init__(self, entry: XiaozhiConfigEntry, device: XiaozhiDevice) -> None:
        """Create the satellite of a device."""
        XiaozhiEntity.__init__(self, device)
        self._entry = entry
        self._mic: asyncio.Queue[bytes | None] | None = None
        self._endpointer: SpeechEndpointer | None = None
        self._barge_in: SpeechEndpointer | None = None
        self._wake_word: str | None = None
        self._turn: _Turn | None = None
        self._run: asyncio.Task[None] | None = None
        self._dropped_audio = False

    # --- entity plumbing -------------------------------------------------------------------------

    async def async_added_to_hass(self) -> None:
        """Receive the device's voice events."""
        await super().async_added_to_hass()
        self.device.handler = self

        @callback
        def detach() -> None:
            if self.device.handler is self:
                self.device.handler = None

        self.async_on_remove(detach)

    async def async_will_remove_from_hass(self) -> None:
        """Stop any turn in progress."""
        self._cancel_turn()
        await super().async_will_remove_from_hass()

    @property
    def tts_options(self) -> dict[str, Any]:
        """Ask for WAV at the engine's own rate; the reply is converted here, not by ffmpeg."""
        return dict(TTS_OPTIONS)

    @property
    def pipeline_entity_id(self) -> str | None:
        """The device's pipeline select."""
        return self._select_entity_id("pipeline")

    @property
    def vad_sensitivity_entity_id(self) -> str | None:
        """The device's VAD sensitivity select."""
        return self._select_entity_id("vad_sensitivity")

    def _select_entity_id(self, key: str) -> str | None:
        return er.async_get(self.hass).async_get_entity_id(
            Platform.SELECT, DOMAIN, f"{self.device.device_id}-{key}"
        )

    @callback
    def async_get_configuration(self) -> AssistSatelliteConfiguration:
        """The wake word is fixed in the firmware."""
        return AssistSatelliteConfiguration(
            available_wake_words=[FIRMWARE_WAKE_WORD],
            active_wake_words=[FIRMWARE_WAKE_WORD.id],
            max_active_wake_words=1,
        )

    async def async_set_configuration(self, config: AssistSatelliteConfiguration) -> None:
        """Accept the fixed configuration only."""
        if config.active_wake_words not in ([], [FIRMWARE_WAKE_WORD.id]):
            raise HomeAssistantError("The wake word of a xiaozhi device is set in its firmware")

    # --- device events (SessionHandler) ----------------------------------------------------------

    @callback
    def session_event(self, session: DeviceSession, event: SessionEvent) -> None:
        """Handle the events of the device's current session; a replaced one's are dropped."""
        if isinstance(event, SessionStarted):
            self.device.set_session(session)
            return
        if session is not self.device.session:
            return
        match event:
            case Listen():
                self._listen_received(session, event)
            case Abort():
                self._abort_received()
            case SessionEnded():
                self.device.set_session(None)
                self._session_ended()

    def _listen_received(self, session: DeviceSession, message: Listen) -> None:
        """Start a turn on `listen start`; end the microphone on `listen stop`."""
        if message.state is ListenState.DETECT:
            self._wake_word = message.text or FIRMWARE_WAKE_WORD.wake_word
        elif message.state is ListenState.START:
            self._start_turn(session)
        elif message.state is ListenState.STOP:
            self._mark(Stage.SPEECH_END)
            self._end_mic()

    @callback
    def audio_received(self, session: DeviceSession, pcm: bytes) -> None:
        """Feed the open turn, ending it when the user stops talking (auto and realtime)."""
        if session is not self.device.session:
            return
        if (mic := self._mic) is None:
            if (
                self._barge_in is not None
                and session.state is SessionState.SPEAKING
                and self._barge_in.process(pcm) is EndpointEvent.SPEECH_START
            ):
                _LOGGER.debug("%s: user barged in", self.entity_id)
                self._start_turn(session)
            return
        if mic.full():
            if not self._dropped_audio:
                _LOGGER.warning("%s: pipeline is not keeping up; dropping audio", self.entity_id)
                self._dropped_audio = True
        else:
            mic.put_nowait(pcm)
        if self._endpointer is not None and self._turn is not None:
            event = self._endpointer.process(pcm)
            if event is EndpointEvent.SPEECH_END:
                self._mark(Stage.SPEECH_END)
                self._end_mic()
            elif event is EndpointEvent.NO_SPEECH:
                # Nobody is talking to it: end the conversation, the device goes idle.
                _LOGGER.debug("%s: no speech; ending the conversation", self.entity_id)
                self._cancel_turn()
                self.tts_response_finished()
                self._entry.async_create_background_task(
                    self.hass, session.close(CloseCode.NORMAL, "no speech"), "xiaozhi close"
                )

    def _abort_received(self) -> None:
        """Barge-in: the session stopped the audio already; drop the run."""
        self._cancel_turn()
        self.tts_response_finished()

    def _session_ended(self) -> None:
        """The device went away: drop the run."""
        self._cancel_turn()
        self._wake_word = None
        self.tts_response_finished()

    # --- turns -----------------------------------------------------------------------------------

    @callback
    def _start_turn(self, session: DeviceSession) -> None:
        self._cancel_turn(stop_audio=True)
        mic: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=MAX_QUEUED_MIC_CHUNKS)
        self._mic = mic
        self._dropped_audio = False
        self._endpointer = (
            None if session.listen_mode is ListenMode.MANUAL else self._new_endpointer()
        )
        wake_word, self._wake_word = self._wake_word, None
        turn = self._turn = _Turn(session)
        self.device.last_turn = turn.timings
        self._run = self._entry.async_create_background_task(
            self.hass, self._async_run_turn(turn, mic, wake_word), f"xiaozhi turn {self.entity_id}"
        )

    def _new_endpointer(self) -> SpeechEndpointer:
        state = self.hass.states.get(self.vad_sensitivity_entity_id or "")
        sensitivity = state.state if state else VadSensitivity.DEFAULT
        silence = TRAILING_SILENCE_S.get(sensitivity, TRAILING_SILENCE_S[VadSensitivity.DEFAULT])
        timeout = self._entry.options.get(CONF_SILENCE_TIMEOUT, DEFAULT_SILENCE_TIMEOUT_S)
        return SpeechEndpointer(trailing_silence_s=silence, no_speech_timeout_s=float(timeout))

    def _mark(self, stage: Stage, turn: _Turn | None = None) -> None:
        if (turn := turn or self._turn) is not None:
            turn.timings.mark(stage, self.hass.loop.time())

    @callback
    def _end_mic(self) -> None:
        """End the audio stream of the open turn: the pipeline's STT stage finishes."""
        if self._mic is not None:
            mic, self._mic = self._mic, None
            self._endpointer = None
            while mic.full():  # make room for the end marker
                mic.get_nowait()
            mic.put_nowait(None)

    @callback
    def _cancel_turn(self, *, stop_audio: bool = False) -> None:
        self._end_mic()
        if (turn := self._turn) is not None:
            self._turn = None
            if stop_audio:
                turn.session.stop_playback()
            if turn.reply is not None:
                turn.reply.cancel()
        if self._run is not None:
            self._run.cancel()
            self._run = None

    async def _async_run_turn(
        self, turn: _Turn, mic: asyncio.Queue[bytes | None], wake_word: str | None
    ) -> None:
        try:
            await self.async_accept_pipeline_from_satellite(
                _mic_stream(mic), wake_word_phrase=wake_word
            )
            if turn.outbox:
                await asyncio.gather(*turn.outbox)
            if turn.reply is not None:
                await turn.reply
        finally:
            if self._mic is mic:
                self._end_mic()
            if self._turn is turn:
                self._turn = None
                self._run = None
        await self._async_finish_turn(turn)

    async def _async_finish_turn(self, turn: _Turn) -> None:
        """Leave the device in a sane state: never speaking, never streaming into nothing."""
        session = turn.session
        if turn.reply is None:
            self.tts_response_finished()
        if turn.error is not None and turn.error[0] != NO_TEXT_ERROR:
            language = "zh" if self.hass.config.language.startswith("zh") else "en"
            await session.send_alert(ERROR_STATUS[language], turn.error[1], "sad")
        await session.stop_speaking()
        if turn.error is not None and session.listen_mode not in (None, ListenMode.MANUAL):
            # The device would keep streaming its microphone into nothing: let it go idle.
            _LOGGER.debug("%s: ending the conversation after %s", self.entity_id, turn.error)
            await session.close(CloseCode.NORMAL, turn.error[0])

    # --- pipeline events -> device ---------------------------------------------------------------

    def on_pipeline_event(self, event: PipelineEvent) -> None:
        """Map pipeline events to protocol messages."""
        turn = self._turn
        if turn is None:
            return
        data = event.data or {}
        match event.type:
            case PipelineEventType.RUN_START:
                turn.tts_token = (data.get("tts_output") or {}).get("token")
            case PipelineEventType.STT_VAD_END:
                self._mark(Stage.SPEECH_END, turn)
                self._end_mic()
            case PipelineEventType.STT_END:
                self._mark(Stage.STT_END, turn)
                self._end_mic()
                text = data["stt_output"]["text"]
                self._post(turn, self._async_heard(turn, text))
            case PipelineEventType.INTENT_PROGRESS:
                if (delta := data.get("chat_log_delta")) and isinstance(
                    content := delta.get("content"), str
                ):
                    turn.subtitles.extend(turn.splitter.push(content))
                if data.get("tts_start_streaming") and turn.tts_token:
                    turn.streaming = True
                    self._start_reply(turn, turn.tts_token)
            case PipelineEventType.INTENT_END:
                self._mark(Stage.INTENT_END, turn)
                output = data.get("intent_output") or {}
                failed = (output.get("response") or {}).get("response_type") == "error"
                emotion = EMOTION_FAILED if failed else EMOTION_DONE
                self._post(turn, turn.session.send_emotion(emotion))
                if turn.streaming and (rest := turn.splitter.flush()):
                    turn.subtitles.append(rest)
            case PipelineEventType.TTS_START:
                if not turn.streaming:
                    turn.subtitles.extend(split_sentences(data.get("tts_input") or ""))
            case PipelineEventType.TTS_END:
                token = (data.get("tts_output") or {}).get("token") or turn.tts_token
                if turn.reply is None and token:
                    self._start_reply(turn, token)
            case PipelineEventType.ERROR:
                turn.error = (data.get("code", "error"), data.get("message", ""))
                _LOGGER.debug("%s: pipeline error %s", self.entity_id, turn.error)
                self._end_mic()

    def _post(self, turn: _Turn, coro: Coroutine[Any, Any, None]) -> None:
        """Send to the device in order, without blocking the pipeline."""
        previous = turn.outbox[-1] if turn.outbox else None

        async def in_order() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await coro

        turn.outbox.append(
            self._entry.async_create_background_task(self.hass, in_order(), "xiaozhi send")
        )

    async def _async_heard(self, turn: _Turn, text: str) -> None:
        """Show what was heard, and switch the device to speaking early (it drops racing audio)."""
        await turn.session.send_stt(text)
        if text:
            await turn.session.start_speaking()

    def _start_reply(self, turn: _Turn, token: str) -> None:
        self._mark(Stage.TTS_READY, turn)
        turn.reply = self._entry.async_create_background_task(
            self.hass, self._async_play_reply(turn, token), f"xiaozhi reply {self.entity_id}"
        )

    async def _async_play_reply(self, turn: _Turn, token: str) -> None:
        session = turn.session
        if turn.outbox:
            await asyncio.gather(*turn.outbox, return_exceptions=True)
        if session.listen_mode is ListenMode.REALTIME:
            self._barge_in = self._new_endpointer()
        try:
            await session.play(self._reply_chunks(turn, token), turn.timings)
        except (HomeAssistantError, XiaozhiError) as err:
            _LOGGER.warning("%s: cannot play the reply: %s", self.entity_id, err)
            turn.error = ("tts-failed", str(err))
        finally:
            self._barge_in = None
            self.tts_response_finished()

    async def _reply_chunks(self, turn: _Turn, token: str) -> AsyncIterator[bytes | str]:
        """Reply audio with each sentence's text just before the audio that follows it."""
        rate = turn.session.reply_audio.sample_rate
        async for pcm in tts_pcm(self.hass, token, rate):
            self._mark(Stage.FIRST_PCM, turn)
            while turn.subtitles:
                yield turn.subtitles.popleft()
            yield pcm
        while turn.subtitles:
            yield turn.subtitles.popleft()

    # --- HA-initiated speech ---------------------------------------------------------------------

    def _connected_session(self) -> DeviceSession:
        if (session := self.device.session) is None or not session.ready:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="not_connected",
                translation_placeholders={"device": self.device.name},
            )
        return session

    async def async_announce(self, announcement: AssistSatelliteAnnouncement) -> None:
        """Play an announcement on the open channel; return when it has played."""
        session = self._connected_session()
        self._cancel_turn(stop_audio=True)
        await session.play(self._announcement_chunks(session, announcement))

    async def async_start_conversation(
        self, start_announcement: AssistSatelliteAnnouncement
    ) -> None:
        """Play the announcement; the device then listens again and its turn continues it."""
        await self.async_announce(start_announcement)

    async def _announcement_chunks(
        self, session: DeviceSession, announcement: AssistSatelliteAnnouncement
    ) -> AsyncIterator[bytes | str]:
        rate = session.reply_audio.sample_rate
        if announcement.preannounce_media_id:
            async for pcm in url_pcm(self.hass, announcement.preannounce_media_id, rate):
                yield pcm
        for sentence in split_sentences(announcement.message):
            yield sentence
        source: AsyncIterable[bytes]
        if announcement.tts_token:
            source = tts_pcm(self.hass, announcement.tts_token, rate)
        else:
            source = url_pcm(self.hass, announcement.media_id, rate)
        async for pcm in source:
            yield pcm


async def _mic_stream(mic: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
    """The microphone audio of one turn, until its end marker."""
    while (chunk := await mic.get()) is not None:
        yield chunk
