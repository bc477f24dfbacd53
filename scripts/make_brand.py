"""Draw the brand images from shapes alone: the integration's and the add-on's.

Run with `scripts/env python scripts/make_brand.py`; the PNGs are committed, this is their source.
A rounded square holding a speech bubble with sound bars: a voice assistant at home. The add-on
store shows `addon/icon.png` (square) and `addon/logo.png` (wide: the icon and a fading sound wave).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
BRAND = ROOT / "custom_components" / "xiaozhi" / "brand"
ADDON = ROOT / "addon"
ADDON_ICON_SIZE = 128  # the add-on store's icon, square
ADDON_LOGO_SIZE = (250, 100)  # the add-on store's logo, wide
BLUE = (3, 169, 244, 255)  # Home Assistant's primary blue
WHITE = (255, 255, 255, 255)
SUPERSAMPLE = 4


def icon(size: int, background: tuple[int, int, int, int]) -> Image.Image:
    """A square icon of `size` pixels."""
    big = size * SUPERSAMPLE
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, big - 1, big - 1), radius=big // 5, fill=background)
    # The speech bubble and its tail.
    left, top, right, bottom = big * 0.18, big * 0.2, big * 0.82, big * 0.7
    draw.rounded_rectangle((left, top, right, bottom), radius=big * 0.12, fill=WHITE)
    draw.polygon(
        [(big * 0.3, bottom - 2), (big * 0.26, big * 0.84), (big * 0.46, bottom - 2)], fill=WHITE
    )
    # Sound bars inside the bubble.
    heights = (0.12, 0.24, 0.32, 0.24, 0.12)
    bar = big * 0.06
    gap = big * 0.045
    total = len(heights) * bar + (len(heights) - 1) * gap
    x = big / 2 - total / 2
    middle = (top + bottom) / 2
    for height in heights:
        half = big * height / 2
        draw.rounded_rectangle(
            (x, middle - half, x + bar, middle + half), radius=bar / 2, fill=background
        )
        x += bar + gap
    return image.resize((size, size), Image.Resampling.LANCZOS)


def logo(size: tuple[int, int], background: tuple[int, int, int, int]) -> Image.Image:
    """The icon on the left of a wide transparent image, a sound wave fading out to its right."""
    width, height = size
    big_width, big_height = width * SUPERSAMPLE, height * SUPERSAMPLE
    image = Image.new("RGBA", (big_width, big_height), (0, 0, 0, 0))
    image.paste(icon(big_height, background), (0, 0))
    draw = ImageDraw.Draw(image)
    bar = big_height * 0.07
    gap = big_height * 0.06
    middle = big_height / 2
    x = big_height + gap * 2
    heights = (0.5, 0.72, 0.38, 0.6, 0.3, 0.44, 0.2, 0.28, 0.12)
    for index, share in enumerate(heights):
        if x + bar > big_width:
            break
        alpha = round(255 * (1 - index / len(heights)))
        half = big_height * share / 2
        draw.rounded_rectangle(
            (x, middle - half, x + bar, middle + half),
            radius=bar / 2,
            fill=(*background[:3], alpha),
        )
        x += bar + gap
    return image.resize(size, Image.Resampling.LANCZOS)


def main() -> None:
    """Write the integration's icon.png and icon@2x.png and the add-on's icon.png and logo.png.

    The blue square reads on light and dark themes alike.
    """
    BRAND.mkdir(exist_ok=True)
    icon(256, BLUE).save(BRAND / "icon.png", optimize=True)
    icon(512, BLUE).save(BRAND / "icon@2x.png", optimize=True)
    icon(ADDON_ICON_SIZE, BLUE).save(ADDON / "icon.png", optimize=True)
    logo(ADDON_LOGO_SIZE, BLUE).save(ADDON / "logo.png", optimize=True)


if __name__ == "__main__":
    main()
