"""Every xiaozhi device is an Assist satellite: the voice loop, top to bottom.

The device's session reports to its satellite directly (it is the session's handler). Each turn
is one pipeline run whose events are mapped to protocol messages here, the one place that does
it: the end of speech -> `tts start` (the device switches while STT and the agent work); STT
text -> `stt`; the agent's answer -> `llm` (emotion); TTS -> each sentence's `sentence_start` as
its audio starts, paced Opus audio, `tts stop`. They go into the turn's
`Reply`, which the session sends in order (`Session.speak`).

End of speech is decided in one place per listening mode: the hub's Silero endpointer in auto
and realtime mode, the device's `listen stop` in manual mode. In auto and realtime mode a short
pause ends the turn at once when the words so far already make a command (`command_check`,
unless the device's "End of speech" select says silence only); otherwise the silence of the
"Finished speaking detection" select does. HA's pipeline always runs its own
voice detector on satellite audio too (assist_satellite builds the audio settings itself, with
no way to turn it off), so the satellite asks it for a silence no command reaches: it never ends
a command, only its 15 s command limit remains.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass, field
import logging
from typing import Any, Final

from homeassistant.components import tts
from homeassistant.components.assist_pipeline import (
    PipelineEvent,
    PipelineEventType,
    PipelineStage,
)
from homeassistant.components.assist_pipeline.pipeline import (
    PipelineInput,
    PipelineRun,
    async_get_pipeline,
)
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
from homeassistant.core import Context, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import chat_session, entity_registry as er
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import command_check
from .const import (
    CONF_SILENCE_TIMEOUT,
    DEFAULT_SILENCE_TIMEOUT_S,
    DOMAIN,
    END_OF_SPEECH_COMMAND,
    END_OF_SPEECH_KEY,
)
from .core import (
    Session,
    SessionEnded,
    SessionEvent,
    SessionStarted,
)
from .core.const import DEVICE_SAMPLE_RATE, SAMPLE_WIDTH, CloseCode
from .core.messages import Abort, Alert, Listen, ListenMode, ListenState, Llm, Mcp, Stt
from .core.reply import Reply
from .core.sentences import SentenceSplitter, split_sentences
from .core.timings import EndedBy, Stage, TurnTimings
from .core.vad import MAX_UTTERANCE_S, PAUSE_S, TRAILING_SILENCE_S, EndpointEvent, SpeechEndpointer
from .devices import XiaozhiDevice
from .entity import XiaozhiEntity, async_add_device_entities
from .hub import XiaozhiConfigEntry
from .media import TTS_OPTIONS, tts_pcm, url_pcm
from .voice import async_check_voice, async_explain, device_pipeline

_LOGGER = logging.getLogger(__name__)

PARALLEL_UPDATES = 0  # the device pushes; nothing polls

MAX_QUEUED_MIC_CHUNKS: Final = 100  # 6 s of 60 ms frames waiting for the pipeline
PRE_ROLL_S: Final = 0.6  # realtime: audio kept from before a barge-in was noticed
TYPED_TEXT_GRACE_S: Final = 0.3  # a wake word's `listen start` follows its `detect` at once
HA_VAD_SILENCE_S: Final = 3600.0  # HA's own detector must never end a command (module doc)
# The command check (at a pause) transcribes the utterance so far, from this long before the
# speech started, and at most an utterance's worth (`MAX_UTTERANCE_S` ends one anyway).
CHECK_LEAD_BYTES: Final = int(1.0 * DEVICE_SAMPLE_RATE) * SAMPLE_WIDTH
MAX_CHECKED_BYTES: Final = int(MAX_UTTERANCE_S * DEVICE_SAMPLE_RATE) * SAMPLE_WIDTH
COMMAND_CHECK_TIMEOUT_S: Final = 2.0  # a check still running then is dropped (a hung engine)
# A check that answered after the silence had ended the turn anyway is no use: the STT is too
# slow for it (or the recognizer). The device's next turns do without, then try again.
SLOW_CHECK_SKIPPED_TURNS: Final = 10
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
    """One pipeline run: the utterance it hears (if spoken) and the reply it sends."""

    session: Session
    mic: asyncio.Queue[bytes | None] | None  # open while the utterance is heard
    endpointer: SpeechEndpointer | None  # None: the device's `listen stop` ends the utterance
    reply: Reply = field(default_factory=Reply)
    timings: TurnTimings = field(default_factory=TurnTimings)
    splitter: SentenceSplitter = field(default_factory=SentenceSplitter)
    tts_token: str | None = None
    streamed_text: bool = False  # the sentences came from the agent's stream
    error: tuple[str, str] | None = None
    typed: bool = False  # the user's words came as text
    dropped_audio: bool = False
    heard: bytearray | None = None  # the utterance so far, for the command check (if on)
    check: asyncio.Task[None] | None = None  # the command check of the latest pause


class XiaozhiSatellite(XiaozhiEntity, AssistSatelliteEntity):
    """A xiaozhi device as an Assist satellite, and the handler of its sessions."""

    entity_description = AssistSatelliteEntityDescription(key="assist_satellite")
    _attr_name = None
    _attr_supported_features = (
        AssistSatelliteEntityFeature.ANNOUNCE | AssistSatelliteEntityFeature.START_CONVERSATION
    )

    def __init__(self, entry: XiaozhiConfigEntry, device: XiaozhiDevice) -> None:
        """Create the satellite of a device."""
        XiaozhiEntity.__init__(self, device)
        self._entry = entry
        self._turn: _Turn | None = None
        self._wake_word: str | None = None
        self._typed_text: asyncio.TimerHandle | None = None
        self._barge_in: SpeechEndpointer | None = None  # realtime: hears the user over a reply
        # Recent microphone audio, with its windows' scores if the add-on scored them.
        self._pre_roll: deque[tuple[bytes, Sequence[tuple[float, float]] | None]] = deque()
        self._pre_roll_bytes = 0
        self._checks_skipped = 0  # turns left without the command check (it was too slow)

    # --- entity plumbing -------------------------------------------------------------------------

    async def async_added_to_hass(self) -> None:
        """Handle the device's sessions."""
        await super().async_added_to_hass()
        self.device.handler = self

        @callback
        def detach() -> None:
            if self.device.handler is self:
                self.device.handler = None

        self.async_on_remove(detach)

    async def async_will_remove_from_hass(self) -> None:
        """Stop any turn in progress."""
        self._end_turn()
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
    def _resolve_vad_sensitivity(self) -> float:
        """HA's own detector must not end commands: the hub's or the device decides (see top)."""
        return HA_VAD_SILENCE_S

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
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="wake_word_fixed",
                translation_placeholders={
                    "device": self.device.name,
                    "wake_word": FIRMWARE_WAKE_WORD.wake_word,
                },
            )

    # --- device events (the session's handler) ---------------------------------------------------

    @callback
    def session_event(self, session: Session, event: SessionEvent) -> None:
        """Handle the events of the device's current session; a replaced one's are dropped."""
        if isinstance(event, SessionStarted):
            self.device.set_session(session)
            return
        if session is not self.device.session:
            return
        match event:
            case Listen(state=ListenState.START):
                self._cancel_typed_text()
                self._start_turn(session)
            case Listen(state=ListenState.STOP):
                if (turn := self._turn) is not None and turn.mic is not None:
                    self._speech_ended(turn, EndedBy.LISTEN_STOP)
            case Listen(state=ListenState.DETECT, text=text):
                self._wake_word = text or FIRMWARE_WAKE_WORD.wake_word
                if text:
                    self._expect_typed_text(session, text)
            case Mcp():
                self._entry.runtime_data.device_tools(self.device).handle(session, event)
            case Abort():
                # The session already stopped the reply; in realtime mode listening goes on.
                self._end_turn()
                self._continue_realtime(session)
            case SessionEnded():
                self._end_turn()
                self._cancel_typed_text()
                self._wake_word = None
                self.device.set_session(None)

    @callback
    def audio_received(
        self, session: Session, pcm: bytes, scored: Sequence[tuple[float, float]] | None
    ) -> None:
        """Feed the utterance being heard; in realtime mode, hear the user over a reply.

        `scored`: the voice scores of its windows where the add-on scored them (no model runs
        here then).
        """
        if session is not self.device.session:
            return
        if session.listen_mode is ListenMode.REALTIME:
            self._keep_pre_roll(pcm, scored)
        turn = self._turn
        if turn is not None and turn.mic is not None:
            self._hear(turn, pcm, scored)
        elif (
            self._barge_in is not None
            and self._barge_in.process(pcm, scored) is EndpointEvent.SPEECH_START
        ):
            _LOGGER.debug("%s: user barged in", self.entity_id)
            session.interrupt()
            self._start_turn(session, pre_roll=True)

    def _hear(
        self, turn: _Turn, pcm: bytes, scored: Sequence[tuple[float, float]] | None = None
    ) -> None:
        """Feed the utterance, ending it when the user stops talking (auto and realtime)."""
        assert turn.mic is not None
        if turn.mic.full():
            if not turn.dropped_audio:
                _LOGGER.warning("%s: pipeline is not keeping up; dropping audio", self.entity_id)
                turn.dropped_audio = True
        else:
            turn.mic.put_nowait(pcm)
        if turn.endpointer is None:
            return
        event = turn.endpointer.process(pcm, scored)
        if (heard := turn.heard) is not None and len(heard) < CHECK_LEAD_BYTES + MAX_CHECKED_BYTES:
            heard += pcm
            if not turn.endpointer.in_speech and len(heard) > CHECK_LEAD_BYTES:
                del heard[: len(heard) - CHECK_LEAD_BYTES]
        if event is EndpointEvent.SPEECH_END:
            self._speech_ended(turn, EndedBy.SILENCE)
        elif event is EndpointEvent.PAUSE:
            self._check_command(turn)
        elif event is EndpointEvent.NO_SPEECH:
            # Nobody is talking to it: end the conversation, the device goes idle.
            _LOGGER.debug("%s: no speech; ending the conversation", self.entity_id)
            self._end_turn()
            self._entry.async_create_background_task(
                self.hass, turn.session.close(CloseCode.NORMAL, "no speech"), "xiaozhi close"
            )

    def _keep_pre_roll(self, pcm: bytes, scored: Sequence[tuple[float, float]] | None) -> None:
        self._pre_roll.append((pcm, scored))
        self._pre_roll_bytes += len(pcm)
        while self._pre_roll_bytes - len(self._pre_roll[0][0]) >= PRE_ROLL_S * 32000:
            self._pre_roll_bytes -= len(self._pre_roll.popleft()[0])

    def _expect_typed_text(self, session: Session, text: str) -> None:
        """Text with no `listen start` right after it was typed, not a wake word heard."""
        self._cancel_typed_text()
        self._typed_text = self.hass.loop.call_later(
            TYPED_TEXT_GRACE_S, self._start_turn, session, text
        )

    def _cancel_typed_text(self) -> None:
        if self._typed_text is not None:
            self._typed_text.cancel()
            self._typed_text = None

    # --- turns -----------------------------------------------------------------------------------

    @callback
    def _start_turn(
        self, session: Session, text: str | None = None, *, pre_roll: bool = False
    ) -> None:
        """Start a pipeline run on the device's microphone, or on typed `text`."""
        self._typed_text = None
        self._end_turn()
        manual = session.listen_mode is ListenMode.MANUAL
        typed = text is not None
        check = not (manual or typed) and self._command_check_on()
        turn = self._turn = _Turn(
            session,
            mic=None if typed else asyncio.Queue(maxsize=MAX_QUEUED_MIC_CHUNKS),
            endpointer=None if manual or typed else self._new_endpointer(check=check),
            typed=typed,
            heard=bytearray() if check else None,
        )
        if pre_roll:
            for pcm, scored in list(self._pre_roll):
                self._hear(turn, pcm, scored)
        self.device.last_turn = turn.timings
        wake_word, self._wake_word = self._wake_word, None
        self._entry.async_create_background_task(
            self.hass, self._async_run_turn(turn, wake_word, text), f"xiaozhi turn {self.entity_id}"
        )

    def _new_endpointer(self, *, check: bool = False) -> SpeechEndpointer:
        """An endpointer at the device's sensitivity; with `check`, it reports pauses too."""
        state = self.hass.states.get(self.vad_sensitivity_entity_id or "")
        sensitivity = state.state if state else VadSensitivity.DEFAULT
        silence = TRAILING_SILENCE_S.get(sensitivity, TRAILING_SILENCE_S[VadSensitivity.DEFAULT])
        timeout = self._entry.options.get(CONF_SILENCE_TIMEOUT, DEFAULT_SILENCE_TIMEOUT_S)
        return SpeechEndpointer(
            trailing_silence_s=silence,
            no_speech_timeout_s=float(timeout),
            pause_s=PAUSE_S if check else None,
        )

    def _command_check_on(self) -> bool:
        """Whether this turn may end at a pause once its words make a command."""
        state = self.hass.states.get(self._select_entity_id(END_OF_SPEECH_KEY) or "")
        if state is not None and state.state != END_OF_SPEECH_COMMAND:
            return False  # "silence only" (a select not there yet keeps the default: on)
        if self._checks_skipped:
            self._checks_skipped -= 1
            return False
        pipeline = device_pipeline(self.hass, self.device)
        if not command_check.can_check(self.hass, pipeline):
            return False
        self._entry.async_create_background_task(
            self.hass, command_check.async_prepare(self.hass, pipeline), "xiaozhi command check"
        )
        return True

    def _check_command(self, turn: _Turn) -> None:
        """The user paused: end the turn now if the words so far make a command (once a pause).

        A check of an earlier pause still running is dropped: this one hears more.
        """
        if turn.heard is None or turn.endpointer is None:
            return
        if turn.check is not None:
            turn.check.cancel()
        turn.check = self._entry.async_create_background_task(
            self.hass,
            self._async_check_command(turn, turn.endpointer.pauses, bytes(turn.heard)),
            "xiaozhi command check",
        )

    async def _async_check_command(self, turn: _Turn, pause: int, pcm: bytes) -> None:
        pipeline = device_pipeline(self.hass, self.device)
        started = self.hass.loop.time()
        try:
            async with asyncio.timeout(COMMAND_CHECK_TIMEOUT_S):
                heard = await command_check.async_check(
                    self.hass,
                    pipeline,
                    pcm,
                    device_id=self.registry_entry.device_id if self.registry_entry else None,
                    satellite_id=self.entity_id,
                )
        except Exception as err:  # a failed check only means no early end
            _LOGGER.debug("%s: the command check failed: %r", self.entity_id, err)
            return
        endpointer = turn.endpointer
        _LOGGER.debug(
            "%s: at pause %d heard %r: command %s", self.entity_id, pause, heard.text, heard.command
        )
        if (
            not heard.command
            or self._turn is not turn
            or endpointer is None
            or endpointer.pauses != pause
            or not endpointer.paused  # the user went on talking
        ):
            return
        turn.check = None
        turn.timings.check_s = self.hass.loop.time() - started
        self._speech_ended(turn, EndedBy.COMMAND)

    def _mark(self, turn: _Turn, stage: Stage) -> None:
        turn.timings.mark(stage, self.hass.loop.time())

    def _speech_ended(self, turn: _Turn, ended_by: EndedBy) -> None:
        """The user has finished: switch the device to speaking now, while STT and the agent work.

        The device drops or flushes reply audio that races its switch (`TTS_START_SETTLE_S`);
        sent here, `tts start` is long applied when the reply is ready. If nothing usable was
        heard, the turn's sender still ends it with `tts stop`.
        """
        if ended_by is EndedBy.SILENCE and turn.check is not None and not turn.check.done():
            # The silence ended the turn before the check answered: too slow to be of use.
            self._checks_skipped = SLOW_CHECK_SKIPPED_TURNS
            _LOGGER.debug("%s: the command check is too slow; pausing it", self.entity_id)
        self._mark(turn, Stage.SPEECH_END)
        turn.timings.ended_by = ended_by
        turn.reply.start_speaking()
        self._end_mic(turn)

    def _end_mic(self, turn: _Turn) -> None:
        """End the utterance: the pipeline's STT stage finishes; realtime hears barge-ins."""
        if turn.check is not None:
            turn.check.cancel()
            turn.check = None
        turn.heard = None
        if (mic := turn.mic) is None:
            return
        turn.mic = turn.endpointer = None
        while mic.full():  # make room for the end marker
            mic.get_nowait()
        # The end marker goes in at the loop's next pass: the turn's sender, woken by the
        # decision, then writes `tts start` before the pipeline runs STT, the agent and TTS on
        # this same loop (fast ones answer within one step of its task, ahead of the sender).
        self.hass.loop.call_soon(mic.put_nowait, None)
        if turn.session.listen_mode is ListenMode.REALTIME:
            self._barge_in = self._new_endpointer()

    @callback
    def _end_turn(self) -> None:
        """Drop the turn in progress: its reply stops at once, its run is cancelled."""
        self._barge_in = None
        if (turn := self._turn) is None:
            return
        self._turn = None
        self._end_mic(turn)
        self._barge_in = None
        turn.reply.interrupt()

    def _continue_realtime(self, session: Session) -> None:
        """In realtime mode the microphone stays open: hear the next utterance."""
        if (
            session.listen_mode is ListenMode.REALTIME
            and session.ready
            and self._turn is None
            and self.device.session is session
        ):
            self._start_turn(session)

    async def _async_run_turn(self, turn: _Turn, wake_word: str | None, text: str | None) -> None:
        """Run the pipeline while the session sends its reply; then follow the listening mode."""
        session = turn.session
        run = self._entry.async_create_background_task(
            self.hass, self._async_run_pipeline(turn, wake_word, text), "xiaozhi pipeline"
        )
        try:
            await session.speak(turn.reply, turn.timings)
        finally:
            run.cancel()
            if self._turn is turn:
                self._turn = None
                self._barge_in = None
            self.tts_response_finished()
        if (failure := turn.reply.audio_error) is not None and turn.error is None:
            turn.error = ("tts-failed", str(failure))
            await session.send(self._error_alert(str(failure)))
        if turn.error is not None and session.listen_mode is not ListenMode.MANUAL:
            # The device would keep streaming its microphone into nothing: let it go idle.
            _LOGGER.debug("%s: ending the conversation after %s", self.entity_id, turn.error)
            await session.close(CloseCode.NORMAL, turn.error[0])
        elif not turn.reply.interrupted:
            self._continue_realtime(session)

    async def _async_run_pipeline(
        self, turn: _Turn, wake_word: str | None, text: str | None
    ) -> None:
        try:
            if text is not None:
                await self._async_run_text(text)
            elif turn.mic is not None and await self._async_voice_ready(turn):
                await self.async_accept_pipeline_from_satellite(
                    _mic_stream(turn.mic), wake_word_phrase=wake_word
                )
        except HomeAssistantError as err:
            _LOGGER.warning("%s: the pipeline failed: %s", self.entity_id, err)
            turn.error = ("pipeline-failed", str(err))
        finally:
            self._end_mic(turn)
            turn.reply.finish()

    async def _async_voice_ready(self, turn: _Turn) -> bool:
        """Whether the device's Assistant can do voice; if not, the device says why."""
        pipeline = device_pipeline(self.hass, self.device)
        if (problem := async_check_voice(self.hass, self.device, pipeline, turn=True)) is None:
            return True
        _LOGGER.warning(
            "%s: the assistant %s cannot hold a voice conversation (%s); see Repairs",
            self.entity_id,
            pipeline.name,
            problem,
        )
        placeholders = {"device": self.device.name, "pipeline": pipeline.name}
        message = await async_explain(self.hass, problem, placeholders)
        turn.error = (problem, message)
        turn.reply.send(self._error_alert(message))
        if pipeline.tts_engine:  # it can still say it
            stream = tts.async_create_stream(
                self.hass, pipeline.tts_engine, pipeline.tts_language, self.tts_options
            )
            stream.async_set_message(message)
            turn.reply.sentence(message)
            turn.reply.play(tts_pcm(self.hass, stream.token, turn.session.reply_audio.sample_rate))
        return False

    async def _async_run_text(self, text: str) -> None:
        """Run typed text from the agent onward, as `async_accept_pipeline_from_satellite` would.

        assist_satellite has no public way to start a run at the agent, so this mirrors its
        chat session and context handling for that one case.
        """
        context = Context()
        self.async_set_context(context)
        with chat_session.async_get_chat_session(self.hass, self._conversation_id) as session:
            self._conversation_id = session.conversation_id
            pipeline_input = PipelineInput(
                session=session,
                intent_input=text,
                device_id=self.registry_entry.device_id if self.registry_entry else None,
                satellite_id=self.entity_id,
                run=PipelineRun(
                    self.hass,
                    context=context,
                    pipeline=async_get_pipeline(self.hass, pipeline_id=self._resolve_pipeline()),
                    start_stage=PipelineStage.INTENT,
                    end_stage=PipelineStage.TTS,
                    event_callback=self._internal_on_pipeline_event,
                    tts_audio_output=self.tts_options,
                ),
            )
            await pipeline_input.execute(validate=True)

    # --- pipeline events -> device ---------------------------------------------------------------

    def on_pipeline_event(self, event: PipelineEvent) -> None:
        """Map pipeline events to protocol messages, in the turn's reply."""
        if (turn := self._turn) is None:
            return
        reply = turn.reply
        data = event.data or {}
        match event.type:
            case PipelineEventType.RUN_START:
                turn.tts_token = (data.get("tts_output") or {}).get("token")
            case PipelineEventType.STT_END:
                self._mark(turn, Stage.STT_END)
                self._end_mic(turn)
                text = data["stt_output"]["text"]
                reply.send(Stt(text=text))
                if text:  # HA's pipeline ended the utterance itself (its 15 s limit)
                    reply.start_speaking()
            case PipelineEventType.INTENT_START if turn.typed:
                self._mark(turn, Stage.SPEECH_END)
                reply.send(Stt(text=data.get("intent_input") or ""))  # shown as the user's words
                reply.start_speaking()
            case PipelineEventType.INTENT_PROGRESS:
                if (delta := data.get("chat_log_delta")) and isinstance(
                    content := delta.get("content"), str
                ):
                    turn.streamed_text = True
                    for sentence in turn.splitter.push(content):
                        reply.sentence(sentence)
                if data.get("tts_start_streaming") and turn.tts_token:
                    self._play(turn, turn.tts_token)
            case PipelineEventType.INTENT_END:
                self._mark(turn, Stage.INTENT_END)
                output = data.get("intent_output") or {}
                failed = (output.get("response") or {}).get("response_type") == "error"
                reply.send(Llm(emotion=EMOTION_FAILED if failed else EMOTION_DONE))
                if rest := turn.splitter.flush():
                    reply.sentence(rest)
            case PipelineEventType.TTS_START if not turn.streamed_text:
                for sentence in split_sentences(data.get("tts_input") or ""):
                    reply.sentence(sentence)
            case PipelineEventType.TTS_END:
                token = (data.get("tts_output") or {}).get("token") or turn.tts_token
                if token:
                    self._play(turn, token)
            case PipelineEventType.ERROR:
                turn.error = (data.get("code", "error"), data.get("message", ""))
                _LOGGER.debug("%s: pipeline error %s", self.entity_id, turn.error)
                self._end_mic(turn)
                if turn.error[0] != NO_TEXT_ERROR:
                    reply.send(self._error_alert(turn.error[1]))

    def _error_alert(self, message: str) -> Alert:
        language = "zh" if self.hass.config.language.startswith("zh") else "en"
        return Alert(status=ERROR_STATUS[language], message=message, emotion="sad")

    def _play(self, turn: _Turn, token: str) -> None:
        if turn.reply.has_audio:
            return
        self._mark(turn, Stage.TTS_READY)
        rate = turn.session.reply_audio.sample_rate
        turn.reply.play(self._marked(turn, tts_pcm(self.hass, token, rate)))

    async def _marked(self, turn: _Turn, audio: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for pcm in audio:
            self._mark(turn, Stage.FIRST_PCM)
            yield pcm

    # --- HA-initiated speech ---------------------------------------------------------------------

    def _connected_session(self) -> Session:
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
        self._end_turn()
        audio = self._announcement_audio(session, announcement)
        await session.speak(Reply.of(audio, split_sentences(announcement.message)))

    async def async_start_conversation(
        self, start_announcement: AssistSatelliteAnnouncement
    ) -> None:
        """Play the announcement; the device then listens again and its turn continues it."""
        await self.async_announce(start_announcement)

    async def _announcement_audio(
        self, session: Session, announcement: AssistSatelliteAnnouncement
    ) -> AsyncIterator[bytes]:
        rate = session.reply_audio.sample_rate
        if announcement.preannounce_media_id:
            async for pcm in url_pcm(self.hass, announcement.preannounce_media_id, rate):
                yield pcm
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
