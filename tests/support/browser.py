"""A real browser for the HTML pages: headless Chromium, offline, reporting what a person would see.

``open_page`` loads a copy of the page with a small probe appended (after the page's own load, it
writes each image's decoded and rendered size and every resource the page fetched into the DOM),
with every network request sent to a closed port, and returns what the probe saw plus every
console message the page logged. Tests skip with the reason where no Chromium is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PROBE = """<script>window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({alt: i.alt, natural: [i.naturalWidth, i.naturalHeight],
    shown: [i.getBoundingClientRect().width, i.getBoundingClientRect().height]}));
  const pre = document.createElement("pre");
  pre.id = "trilho-probe";
  pre.textContent = JSON.stringify({images, resources: performance.getEntriesByType("resource").map(r => r.name),
    sections: [...document.querySelectorAll("section h2")].map(h => h.textContent)});
  document.body.appendChild(pre);
});</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium here (Debian: apt-get install chromium; .ci/run installs it)")


def open_page(page: Path, work: Path) -> dict:
    """What a headless Chromium sees of ``page``, offline: ``images``, ``resources``, ``sections``
    and the ``console`` messages."""
    probed = work / f"probed-{page.name}"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", f"--user-data-dir={work / 'chromium'}",
         "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="trilho-probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the page did not finish loading: {done.stderr[-2000:]}"
    seen = json.loads(found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                      .replace("&amp;", "&"))
    seen["console"] = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return seen


def assert_readable(seen: dict, figures: int) -> None:
    """No console message, nothing fetched, and at least ``figures`` images, each decoded and shown at a non-zero size."""
    assert seen["console"] == [], seen["console"]
    assert seen["resources"] == [], seen["resources"]
    assert len(seen["images"]) >= figures, seen["images"]
    for image in seen["images"]:
        assert min(image["natural"]) > 0 and min(image["shown"]) > 0, image
