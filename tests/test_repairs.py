"""Repairs and their fix flows: a new device, an Assistant that cannot talk, codeless mode."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from homeassistant.components.assist_pipeline import async_get_pipeline, async_update_pipeline
from homeassistant.components.assist_pipeline.pipeline import KEY_ASSIST_PIPELINE
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import device_registry as dr, entity_registry as er, issue_registry as ir
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.xiaozhi.activation import waiting_issue_id
from custom_components.xiaozhi.const import DOMAIN
from custom_components.xiaozhi.core.messages import ListenMode
from custom_components.xiaozhi.issues import device_issue_id
from custom_components.xiaozhi.repairs import async_create_fix_flow
from tests.providers import Providers
from tools.audio import speech_pcm
from tools.emulator import DeviceEmulator

from .conftest import async_fix, async_start_fix, make_hub_entry

type MakeDevice = Callable[..., Coroutine[Any, Any, DeviceEmulator]]


@pytest.fixture(scope="session")
def speech() -> bytes:
    """A spoken command, as the device microphone sends it."""
    return speech_pcm("turn on the kitchen light")


@pytest.fixture
def hub_entry(request: pytest.FixtureRequest) -> MockConfigEntry:
    """The hub, after the providers where a test has them (their views come first)."""
    if "providers" in request.fixturenames:
        request.getfixturevalue("providers")
    return make_hub_entry()


async def add_pipeline(hass: HomeAssistant, name: str, providers: Providers, *, stt: bool) -> None:
    store = hass.data[KEY_ASSIST_PIPELINE].pipeline_store
    await store.async_create_item(
        {
            "name": name,
            "language": "en",
            "conversation_engine": "conversation.home_assistant",
            "conversation_language": "en",
            "stt_engine": providers.stt.entity_id if stt else None,
            "stt_language": "en-US" if stt else None,
            "tts_engine": providers.tts.entity_id,
            "tts_language": "en-US",
            "tts_voice": None,
            "wake_word_entity": None,
            "wake_word_id": None,
        }
    )


def pipeline_select(hass: HomeAssistant, device_id: str) -> str:
    entity_id = er.async_get(hass).async_get_entity_id("select", DOMAIN, f"{device_id}-pipeline")
    assert entity_id is not None
    return entity_id


async def test_an_assistant_that_cannot_hear_is_caught_before_the_first_turn(
    hass: HomeAssistant, providers: Providers, ota_url: str, speech: bytes
) -> None:
    # A fresh HA: the preferred Assistant has no speech-to-text.
    await async_update_pipeline(hass, async_get_pipeline(hass), stt_engine=None)
    await add_pipeline(hass, "Voice", providers, stt=True)
    await add_pipeline(hass, "Typing", providers, stt=False)
    issues = ir.async_get(hass)
    device = DeviceEmulator(ota_url, relisten=False)
    try:
        code = (await device.check_ota())["activation"]["code"]
        form = await async_start_fix(hass, waiting_issue_id(device.device_id))
        result = await async_fix(hass, form["flow_id"], {"code": code})
        # Added, and the same flow goes on: pick an Assistant that can hear.
        assert result["type"] is FlowResultType.FORM
        assert result["step_id"] == "pipeline"
        assert result["data_schema"].schema["pipeline"].config["options"] == ["Voice"]
        issue_id = device_issue_id("pipeline_cannot_listen", device.device_id)
        issue = issues.async_get_issue(DOMAIN, issue_id)
        assert issue is not None
        assert issue.translation_key == "pipeline_no_stt"
        assert issue.is_fixable

        # The user leaves it: the device's first turn explains, instead of a raw error.
        await device.activate(poll_s=0.01)
        await device.check_ota()
        await device.connect()
        await device.listen_start(ListenMode.AUTO)
        await device.stream_pcm(speech[:32000])
        alert = await device.wait_for("alert")
        assert "has no speech-to-text" in alert["message"]
        assert providers.stt.received == []
        # It also says it, with the Assistant's text-to-speech, then the device goes idle.
        await device.wait_for("tts", "stop", timeout=15)
        assert device.received.of_type("tts", "sentence_start")[0]["text"] == alert["message"]
        await device.wait_closed(timeout=5)

        # The Assistant select refuses another that cannot hear, and says why.
        select = pipeline_select(hass, device.device_id)
        with pytest.raises(ServiceValidationError) as refused:
            await hass.services.async_call(
                "select",
                "select_option",
                {"entity_id": select, "option": "Typing"},
                blocking=True,
            )
        assert refused.value.translation_key == "pipeline_no_stt"
        assert hass.states.get(select).state == "preferred"

        # The repair's own fix flow sets the select; the repair goes.
        form = await async_start_fix(hass, issue_id)
        assert form["step_id"] == "pipeline"
        result = await async_fix(hass, form["flow_id"], {"pipeline": "Voice"})
        assert result["type"] is FlowResultType.CREATE_ENTRY
        assert hass.states.get(select).state == "Voice"
        assert issues.async_get_issue(DOMAIN, issue_id) is None

        # Back to an Assistant that cannot hear (the preferred one): the repair is back.
        await hass.services.async_call(
            "select",
            "select_option",
            {"entity_id": select, "option": "preferred"},
            blocking=True,
        )
        await hass.async_block_till_done()
        assert issues.async_get_issue(DOMAIN, issue_id) is not None
        # ... and goes when that Assistant gets a speech-to-text engine.
        await async_update_pipeline(
            hass, async_get_pipeline(hass), stt_engine=providers.stt.entity_id
        )
        await hass.async_block_till_done()
        assert issues.async_get_issue(DOMAIN, issue_id) is None
    finally:
        await device.close()


async def test_a_device_added_where_an_assistant_can_talk_is_just_added(
    hass: HomeAssistant, providers: Providers, ota_url: str
) -> None:
    device = DeviceEmulator(ota_url)
    try:
        code = (await device.check_ota())["activation"]["code"]
        form = await async_start_fix(hass, waiting_issue_id(device.device_id))
        result = await async_fix(hass, form["flow_id"], {"code": code})
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "device_added"
        assert result["description_placeholders"]["device"].endswith(
            device.device_id.replace(":", "")[-4:].upper()
        )
        assert not [i for (d, _), i in ir.async_get(hass).issues.items() if d == DOMAIN]
    finally:
        await device.close()


async def test_repairs_go_with_their_device_and_hub(
    hass: HomeAssistant, make_device: MakeDevice, ota_url: str, hass_ws_client: Any
) -> None:
    issues = ir.async_get(hass)
    device = await make_device()
    for _ in range(3):
        with pytest.raises(Exception):  # noqa: B017, PT011
            await device.connect(token="token-from-an-old-backup")
    failing = device_issue_id("device_auth_failing", device.device_id)
    cannot_listen = device_issue_id("pipeline_cannot_listen", device.device_id)
    assert issues.async_get_issue(DOMAIN, failing) is not None
    assert issues.async_get_issue(DOMAIN, cannot_listen) is not None  # no STT in this HA
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    registry_device = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, device.device_id), entry.entry_id
    )
    assert registry_device is not None
    client = await hass_ws_client(hass)
    assert (await client.remove_device(registry_device.id))["success"]
    await hass.async_block_till_done()
    assert issues.async_get_issue(DOMAIN, failing) is None
    assert issues.async_get_issue(DOMAIN, cannot_listen) is None

    # A device waiting for its code, and the open-to-the-network warning: the hub is deleted.
    stranger = DeviceEmulator(ota_url)
    try:
        await stranger.check_ota()
        hass.config_entries.async_update_entry(entry, options={"auth_mode": "local_network"})
        await hass.async_block_till_done()
        assert issues.async_get_issue(DOMAIN, waiting_issue_id(stranger.device_id)) is not None
        assert issues.async_get_issue(DOMAIN, "open_to_local_network") is not None
        await hass.config_entries.async_remove(entry.entry_id)
        await hass.async_block_till_done()
        assert [key for key in issues.issues if key[0] == DOMAIN] == []
    finally:
        await stranger.close()


async def test_open_to_local_network_is_fixed_in_one_click(
    hass: HomeAssistant, ota_url: str
) -> None:
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    hass.config_entries.async_update_entry(entry, options={"auth_mode": "local_network"})
    await hass.async_block_till_done()
    form = await async_start_fix(hass, "open_to_local_network")
    assert form["step_id"] == "confirm"
    result = await async_fix(hass, form["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options["auth_mode"] == "bound"
    assert ir.async_get(hass).async_get_issue(DOMAIN, "open_to_local_network") is None


async def test_code_flows_left_open_end_cleanly(hass: HomeAssistant, ota_url: str) -> None:
    """The device was added in another flow, or the hub went, while a code form stayed open."""
    device = DeviceEmulator(ota_url)
    try:
        code = (await device.check_ota())["activation"]["code"]
        issue_id = waiting_issue_id(device.device_id)
        first, second, third = [await async_start_fix(hass, issue_id) for _ in range(3)]
        result = await async_fix(hass, first["flow_id"], {"code": code})
        assert result["reason"] == "added_without_voice"  # no speech-to-text in this HA
        result = await async_fix(hass, second["flow_id"], {"code": code})
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "already_added"
        entry = hass.config_entries.async_entries(DOMAIN)[0]
        assert await hass.config_entries.async_unload(entry.entry_id)
        result = await async_fix(hass, third["flow_id"], {"code": code})
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "hub_not_loaded"
    finally:
        await device.close()


async def test_no_assistant_to_choose_says_what_to_do(
    hass: HomeAssistant, make_device: MakeDevice
) -> None:
    device = await make_device()  # this HA has no speech-to-text at all
    form = await async_start_fix(hass, device_issue_id("pipeline_cannot_listen", device.device_id))
    assert form["type"] is FlowResultType.ABORT
    assert form["reason"] == "no_voice_pipeline"
    assert form["description_placeholders"] == {"pipeline": async_get_pipeline(hass).name}


async def test_an_assistant_choice_left_open_ends_when_the_device_goes(
    hass: HomeAssistant, providers: Providers, make_device: MakeDevice, hass_ws_client: Any
) -> None:
    await async_update_pipeline(hass, async_get_pipeline(hass), stt_engine=None)
    await add_pipeline(hass, "Voice", providers, stt=True)
    device = await make_device()
    form = await async_start_fix(hass, device_issue_id("pipeline_cannot_listen", device.device_id))
    assert form["step_id"] == "pipeline"
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    registry_device = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, device.device_id), entry.entry_id
    )
    assert registry_device is not None
    client = await hass_ws_client(hass)
    assert (await client.remove_device(registry_device.id))["success"]
    result = await async_fix(hass, form["flow_id"], {"pipeline": "Voice"})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "device_gone"


async def test_a_repair_of_no_known_kind_has_no_fix_flow(hass: HomeAssistant) -> None:
    with pytest.raises(ValueError, match="no fix flow for stray"):
        await async_create_fix_flow(hass, "stray", {"kind": "no_such_repair"})
