"""What hassfest checks in strings, translations and the manifest, for what runs offline.

hassfest (`script.hassfest`) ships in HA's repository, not in the `homeassistant` wheel, so these
rules are re-stated here: valid JSON, no URLs or HTML in strings (URLs go in description
placeholders), the same keys and placeholders in strings.json and every translation, every
exception key raised in code present (and none unused), manifest keys in hassfest's order, and
requirements HA can install. Each rule is also run against a broken copy to show it bites.
"""

from __future__ import annotations

import copy
from importlib import metadata
import json
from pathlib import Path
import re
import string
import sys
from typing import Any

import homeassistant
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
import pytest

from custom_components.xiaozhi import PLATFORMS
from custom_components.xiaozhi.llm_client import ErrorKind
from custom_components.xiaozhi.service_check import CheckError
from custom_components.xiaozhi.voice import NO_STT, NO_TTS

ROOT = Path(__file__).resolve().parent.parent
INTEGRATION = ROOT / "custom_components" / "xiaozhi"
LANGUAGES = ("en", "zh-Hans")
TIERS = ("bronze", "silver", "gold", "platinum")

# A scheme ("http://", "wss://"), "www.", or a bare host name with a common top-level domain.
URL = re.compile(
    r"[a-z][a-z0-9+.-]*://|\bwww\.|\b[\w-]+(\.[\w-]+)*\.(com|cn|me|org|net|io)\b", re.IGNORECASE
)
HTML = re.compile(r"<[a-z/][^>]*>", re.I)
QUOTED_PLACEHOLDER = re.compile(r"'\{\w+\}'")
# A key given with the domain, or to tts.py's `_error(key, ...)` helper.
RAISED_KEY = re.compile(r'translation_domain=DOMAIN,\s*translation_key="(\w+)"|_error\(\s*"(\w+)"')
# Exception keys chosen at run time: the chat service's error kinds and an assistant's problem.
DYNAMIC_EXCEPTION_KEYS = {f"llm_{kind}" for kind in ErrorKind} | {NO_STT, NO_TTS}


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _leaves(data: Any, prefix: str = "") -> dict[str, str]:
    """Every string by its dotted key."""
    if isinstance(data, dict):
        found: dict[str, str] = {}
        for key, value in data.items():
            found |= _leaves(value, f"{prefix}.{key}" if prefix else key)
        return found
    assert isinstance(data, str), f"{prefix}: not a string"
    return {prefix: data}


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def _raised_keys() -> set[str]:
    return {
        key
        for path in INTEGRATION.rglob("*.py")
        for keys in RAISED_KEY.findall(path.read_text(encoding="utf-8"))
        for key in keys
        if key
    }


def string_problems(
    strings: dict[str, Any], translations: dict[str, dict[str, Any]], raised: set[str]
) -> list[str]:
    """What hassfest (and a translator) would object to."""
    problems: list[str] = []
    source = _leaves(strings)
    for key, text in source.items():
        if URL.search(text):
            problems.append(f"{key}: a URL (use a description placeholder)")
        if HTML.search(text):
            problems.append(f"{key}: HTML")
        if text != text.strip():
            problems.append(f"{key}: leading or trailing whitespace")
        if QUOTED_PLACEHOLDER.search(text):
            problems.append(f"{key}: a single-quoted placeholder")
    for language, data in translations.items():
        leaves = _leaves(data)
        for key in source.keys() - leaves.keys():
            problems.append(f"{language}: {key} missing")
        for key in leaves.keys() - source.keys():
            problems.append(f"{language}: {key} not in strings.json")
        for key in source.keys() & leaves.keys():
            if _placeholders(source[key]) != _placeholders(leaves[key]):
                problems.append(f"{language}: {key} has other placeholders")
            if URL.search(leaves[key]):
                problems.append(f"{language}: {key}: a URL")
    exceptions = set(strings.get("exceptions", {}))
    problems += [f"exceptions.{key} raised but missing" for key in sorted(raised - exceptions)]
    unused = exceptions - raised - DYNAMIC_EXCEPTION_KEYS
    problems += [f"exceptions.{key} never raised" for key in sorted(unused)]
    return problems


def _current() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    strings = _load(INTEGRATION / "strings.json")
    folder = INTEGRATION / "translations"
    translations = {lang: _load(folder / f"{lang}.json") for lang in LANGUAGES}
    return strings, translations


def test_strings_and_translations_pass_the_hassfest_rules() -> None:
    strings, translations = _current()
    assert string_problems(strings, translations, _raised_keys()) == []


def test_english_is_strings_json() -> None:
    """HA builds en.json from strings.json; here it is kept identical by hand."""
    strings, translations = _current()
    assert translations["en"] == strings


def test_the_check_catches_a_url_a_missing_key_and_an_unknown_exception() -> None:
    strings, translations = _current()
    broken = copy.deepcopy(strings)
    broken["issues"]["unreachable_url"]["description"] += " See https://example.com/help."
    broken_translations = copy.deepcopy(translations)
    del broken_translations["zh-Hans"]["exceptions"]["not_connected"]
    broken_translations["zh-Hans"]["exceptions"]["tool_failed"]["message"] = "{device} 失败"
    problems = string_problems(broken, broken_translations, _raised_keys() | {"no_such_key"})
    assert "issues.unreachable_url.description: a URL (use a description placeholder)" in problems
    assert "zh-Hans: exceptions.not_connected.message missing" in problems
    assert "zh-Hans: exceptions.tool_failed.message has other placeholders" in problems
    assert "exceptions.no_such_key raised but missing" in problems


def test_the_api_key_repair_can_show_every_check_error() -> None:
    """Its form shows what the speech checks and the agent's one-token check return."""
    strings, _ = _current()
    errors = strings["issues"]["api_key_rejected"]["fix_flow"]["error"]
    assert set(errors) == set(CheckError) | (set(ErrorKind) - {ErrorKind.TOO_MANY_STEPS})


@pytest.mark.parametrize(
    "text", ["wss://host/x", "see www.example.org", "on xiaozhi.me", "http://192.168.1.10:8123/"]
)
def test_what_counts_as_a_url(text: str) -> None:
    assert URL.search(text)


def test_manifest_keys_are_in_hassfest_order() -> None:
    """Domain, name, then the rest sorted; a custom integration needs a version."""
    manifest = _load(INTEGRATION / "manifest.json")
    keys = list(manifest)
    assert keys[:2] == ["domain", "name"]
    assert keys[2:] == sorted(keys[2:])
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])


def _constraints() -> dict[str, str]:
    """HA's own pins (package_constraints.txt), which pip applies to custom requirements too."""
    text = (Path(homeassistant.__file__).parent / "package_constraints.txt").read_text()
    pins = {}
    for raw in text.splitlines():
        line = raw.split("#")[0].strip()
        if "==" in line and ";" not in line:
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version
    return pins


def test_requirements_install_under_has_constraints() -> None:
    """hassfest's form (no spaces, parseable versions); HA's own pin of a package must satisfy it.

    HA installs a custom integration's requirements with `-c package_constraints.txt`: an exact
    pin other than HA's cannot be installed, so packages HA pins get a range here.
    """
    constraints = _constraints()
    for line in _load(INTEGRATION / "manifest.json")["requirements"]:
        assert " " not in line, line
        requirement = Requirement(line)
        assert requirement.specifier, f"{line}: no version"
        if (pinned := constraints.get(canonicalize_name(requirement.name))) is not None:
            assert requirement.specifier.contains(pinned), f"{line} excludes HA's {pinned}"
            assert not any(spec.operator == "==" for spec in requirement.specifier), line


def _distributions(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(line).name) for line in requirements}


def _module(distribution: str) -> str:
    return {"audioop-lts": "audioop"}.get(distribution, distribution.replace("-", "_"))


def test_every_third_party_import_is_a_requirement() -> None:
    """Every import comes from the standard library, HA's own requirements or the manifest's.

    A package the manifest's requirements bring (anyio and pydantic with mcp) counts as theirs.
    """
    declared = _distributions(_load(INTEGRATION / "manifest.json")["requirements"])
    provided = set(declared) | {"homeassistant", "probatio"}
    for name in ["homeassistant", *declared]:
        provided |= _distributions(
            [line for line in metadata.requires(name) or [] if "extra ==" not in line]
        )
    imported = {
        match.split(".")[0]
        for path in INTEGRATION.rglob("*.py")
        for match in re.findall(r"^\s*(?:import|from) ([a-z_][\w.]*)", path.read_text(), re.M)
    }
    third_party = imported - set(sys.stdlib_module_names)
    assert third_party <= {_module(name) for name in provided}, third_party


def test_every_platform_limits_parallel_updates() -> None:
    """PARALLEL_UPDATES on every platform module (0 where entities only push)."""
    missing = [
        platform
        for platform in PLATFORMS
        if "PARALLEL_UPDATES" not in (INTEGRATION / f"{platform}.py").read_text()
    ]
    assert missing == []


@pytest.mark.parametrize("name", ["manifest.json", "strings.json", "icons.json"])
def test_integration_json_is_valid(name: str) -> None:
    assert isinstance(_load(INTEGRATION / name), dict)


def test_every_icon_belongs_to_a_translated_entity_and_state() -> None:
    """icons.json uses the entities' translation keys (and their states) from strings.json."""
    icons = _load(INTEGRATION / "icons.json")["entity"]
    entities = _load(INTEGRATION / "strings.json")["entity"]
    for platform, keys in icons.items():
        for key, icon in keys.items():
            assert key in entities[platform], f"{platform}.{key}"
            assert icon["default"].startswith("mdi:")
            assert set(icon.get("state", {})) <= set(entities[platform][key].get("state", {}))


def test_quality_scale_lists_every_rule_of_the_installed_ha() -> None:
    """The same rules as a Platinum core integration's file; a reason for every exempt or todo."""
    import yaml  # noqa: PLC0415 (only this test reads YAML)

    core = Path(homeassistant.__file__).parent / "components" / "acaia" / "quality_scale.yaml"
    rules = yaml.safe_load((INTEGRATION / "quality_scale.yaml").read_text())["rules"]
    assert set(rules) == set(yaml.safe_load(core.read_text())["rules"])
    for name, rule in rules.items():
        if rule == "done":
            continue
        assert rule["status"] in {"done", "todo", "exempt"}, name
        assert rule["status"] == "done" or rule.get("comment"), name
    assert _load(INTEGRATION / "manifest.json").get("quality_scale") == tier_met(
        rules, _tiers(core.read_text())
    )


def _tiers(text: str) -> dict[str, str]:
    """Each rule's tier, from the section comments ("# Bronze") of a core quality_scale.yaml."""
    tiers: dict[str, str] = {}
    tier = ""
    for line in text.splitlines():
        if section := re.fullmatch(r"\s*# (Bronze|Silver|Gold|Platinum)\s*", line):
            tier = section[1].lower()
        elif rule := re.fullmatch(r"  ([a-z-]+):.*", line):
            tiers[rule[1]] = tier
    return tiers


def tier_met(rules: dict[str, Any], tiers: dict[str, str]) -> str | None:
    """The highest tier whose rules, and every lower tier's, are all done or exempt."""
    todo = {name for name, rule in rules.items() if rule != "done" and rule["status"] == "todo"}
    met = None
    for tier in TIERS:
        if any(tiers[name] == tier for name in todo):
            break
        met = tier
    return met


def test_the_tier_is_the_highest_with_nothing_left_to_do() -> None:
    tiers = {"a": "bronze", "b": "silver", "c": "gold", "d": "platinum"}
    todo = {"status": "todo", "comment": "later"}
    exempt = {"status": "exempt", "comment": "n/a"}
    assert tier_met(dict.fromkeys(tiers, "done"), tiers) == "platinum"
    assert tier_met({"a": "done", "b": exempt, "c": "done", "d": todo}, tiers) == "gold"
    assert tier_met({"a": "done", "b": todo, "c": "done", "d": "done"}, tiers) == "bronze"
    assert tier_met({"a": todo, "b": "done", "c": "done", "d": "done"}, tiers) is None
