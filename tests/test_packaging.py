"""What HACS and Home Assistant read from the repository besides code."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
import pytest

ROOT = Path(__file__).resolve().parent.parent
BRAND = ROOT / "custom_components" / "xiaozhi" / "brand"


@pytest.mark.parametrize(("name", "size"), [("icon.png", 256), ("icon@2x.png", 512)])
def test_brand_icons_are_square_pngs_of_the_sizes_ha_serves(name: str, size: int) -> None:
    with Image.open(BRAND / name) as image:
        assert (image.format, image.size) == ("PNG", (size, size))
        assert image.mode == "RGBA"


def test_the_license_is_the_one_pyproject_names() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert 'license = "MIT"' in (ROOT / "pyproject.toml").read_text()
