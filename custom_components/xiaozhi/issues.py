"""The repairs the hub raises, through one helper; `repairs.py` fixes those that can be fixed."""

from __future__ import annotations

from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import CONF_API_KEY
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir

from .const import DOMAIN, ISSUE_API_KEY_REJECTED


def device_issue_id(kind: str, device_id: str) -> str:
    """The id of a device's repair issue of this kind."""
    return f"{kind}_{device_id.replace(':', '')}"


@callback
def async_raise_issue(
    hass: HomeAssistant,
    issue_id: str,
    translation_key: str,
    placeholders: dict[str, str] | None = None,
    severity: ir.IssueSeverity = ir.IssueSeverity.WARNING,
    *,
    fix: dict[str, str] | None = None,
) -> None:
    """Show (or keep showing) a repair; its text is `issues.<translation_key>`.

    With `fix` (the data its fix flow gets, see `repairs.py`) the user can fix it in a flow.
    """
    ir.async_create_issue(
        hass,
        DOMAIN,
        issue_id,
        is_fixable=fix is not None,
        data={"kind": translation_key, **fix} if fix is not None else None,
        severity=severity,
        translation_key=translation_key,
        translation_placeholders=placeholders,
    )


def api_key_issue_id(subentry_id: str) -> str:
    """The id of the repair asking for a new API key for a subentry."""
    return f"{ISSUE_API_KEY_REJECTED}_{subentry_id}"


@callback
def async_api_key_rejected(hass: HomeAssistant, subentry: ConfigSubentry, key: str | None) -> None:
    """A service refused `key`: ask for a new one, with a fix flow (`repairs.ApiKeyFlow`).

    Not if the subentry is gone or has another key by now (a request made before it changed).
    """
    current = next(
        (
            entry.subentries[subentry.subentry_id]
            for entry in hass.config_entries.async_entries(DOMAIN)
            if subentry.subentry_id in entry.subentries
        ),
        None,
    )
    if current is None or current.data.get(CONF_API_KEY) != key:
        return
    async_raise_issue(
        hass,
        api_key_issue_id(subentry.subentry_id),
        ISSUE_API_KEY_REJECTED,
        {"name": current.title},
        ir.IssueSeverity.ERROR,
        fix={"subentry_id": subentry.subentry_id},
    )


@callback
def async_delete_api_key_issue(hass: HomeAssistant, subentry_id: str) -> None:
    """The service took the key, or the subentry changed or went: its key repair goes."""
    ir.async_delete_issue(hass, DOMAIN, api_key_issue_id(subentry_id))


@callback
def async_delete_device_issues(hass: HomeAssistant, device_id: str) -> None:
    """A device is gone: every repair about it goes too."""
    registry = ir.async_get(hass)
    suffix = device_issue_id("", device_id)
    for domain, issue_id in list(registry.issues):
        if domain == DOMAIN and issue_id.endswith(suffix):
            ir.async_delete_issue(hass, DOMAIN, issue_id)


@callback
def async_delete_all_issues(hass: HomeAssistant) -> None:
    """The hub is gone: so is every repair it raised."""
    registry = ir.async_get(hass)
    for domain, issue_id in list(registry.issues):
        if domain == DOMAIN:
            ir.async_delete_issue(hass, DOMAIN, issue_id)
