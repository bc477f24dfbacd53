"""The benchmarks run on the test suite's fixtures: a real HA with the integration and providers."""

from tests.conftest import (  # noqa: F401  (fixtures, found by name)
    _custom_integrations,
    _tts_cache_in_tmp,
    ha_core,
    hub_entry,
    make_device,
    ota_url,
    providers,
)
