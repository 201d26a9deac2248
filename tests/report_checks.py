"""Checks of a written report, shared by the sweep and saliency tests: the files, the PNGs, and
the HTML page as headless Chromium renders it."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from PIL import Image

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Appended to a copy of the page: after load, record how many images decoded and how many broke.
IMAGE_PROBE = """<script>window.addEventListener('load', () => {
  const images = [...document.images];
  const broken = images.filter(i => !i.complete || i.naturalWidth === 0).length;
  document.body.setAttribute('data-images', images.length + ':' + broken);
});</script>"""


def check_report(out: Path, expected_plots: tuple[str, ...]) -> None:
    assert (out / "report.md").exists() and (out / "report.html").exists()
    for name in expected_plots:
        with Image.open(out / f"{name}.png") as image:
            image.load()
            assert image.format == "PNG" and image.width >= 300 and image.height >= 200
    images, broken = render_images(out / "report.html", out.parent / "chromium-profile")
    assert images >= len(expected_plots) and broken == 0


def render_images(page: Path, profile: Path) -> tuple[int, int]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is not installed (make setup installs it)"
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", IMAGE_PROBE + "</body>"))
    result = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
                             "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    match = re.search(r'data-images="(\d+):(\d+)"', result.stdout)
    assert match, f"the page did not finish loading in Chromium: {result.stderr[-500:]}"
    return int(match.group(1)), int(match.group(2))
