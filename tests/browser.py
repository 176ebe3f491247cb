"""Checks of an HTML page in real headless Chromium (Debian's `chromium` package; `.ci/run` installs it where it can).

`check_page` loads a copy of the page with a probe script injected first in <head>: it records error events
(a resource that fails to load, a script error) and, on the load event (every image loaded or failed), the decoded
size of every <img> (0 × 0: undecodable), and writes what it found into the DOM, which `--dump-dom` returns. Chromium's own console log (`--enable-logging=stderr`)
gives every console message of the page; a report has no scripts, so any message at all is a problem.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
SKIP_REASON = ("no chromium binary on PATH: install Debian's package (apt-get install chromium; .ci/run does this "
               "where apt-get works) to check report.html in a real browser")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
         "--enable-logging=stderr", "--v=0"]

PROBE = """<script>(() => {
  const problems = [];
  window.addEventListener("error", ev => {
    const t = ev.target;
    problems.push(t && t !== window ? "failed to load " + t.tagName + " " + String(t.src || t.href).slice(-60)
                                    : "script error: " + ev.message);
  }, true);
  window.addEventListener("load", () => {  // after every image has loaded or failed
    const images = Array.from(document.images,
      i => i.complete && i.naturalWidth > 0 ? i.naturalWidth + "x" + i.naturalHeight : "undecodable");
    const p = document.createElement("pre");
    p.id = "aimc-probe";
    p.textContent = JSON.stringify({images, problems, svgs: document.querySelectorAll("svg").length,
                                    title: document.title, h2: Array.from(document.querySelectorAll("h2"),
                                                                          h => h.textContent)});
    document.body.appendChild(p);
  });
})();</script>"""


def _run(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"chromium-profile-{len(list(tmp.glob('chromium-profile-*')))}"  # a new, empty one each time
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def console_messages(stderr: str) -> list[str]:
    """The page's console messages in Chromium's log: lines like `[..:INFO:CONSOLE:3] "text", source: ...`."""
    return [ln for ln in stderr.splitlines() if re.search(r":CONSOLE[(:]", ln)]


def check_page(page: Path, tmp: Path) -> dict:
    """Load ``page`` (a copy with the probe) headless; returns ``images`` ("WxH" or "undecodable" per <img>),
    ``problems`` (load and script errors), ``console`` (console messages), ``svgs``, ``title``, ``h2``."""
    text = page.read_text(encoding="utf-8")
    probe = page.with_name(page.stem + ".probe.html")
    head = re.search(r"<head[^>]*>", text)
    probe.write_text(text[:head.end()] + PROBE + text[head.end():], encoding="utf-8")
    try:
        for _ in range(3):  # on a busy machine chromium now and then dumps the DOM before the load event
            res = _run(tmp, "--dump-dom", "--virtual-time-budget=10000", probe.resolve().as_uri())
            m = re.search(r'<pre id="aimc-probe">(.*?)</pre>', res.stdout, flags=re.S)
            if m:
                break
    finally:
        probe.unlink()
    if not m:
        raise AssertionError(f"the probe did not report (chromium rc {res.returncode}): {res.stderr[-2000:]}")
    out = json.loads(html.unescape(m.group(1)))
    out["console"] = console_messages(res.stderr)
    return out


def screenshot(page: Path, shot: Path, tmp: Path, width: int = 1280, height: int = 3000) -> subprocess.CompletedProcess:
    """A PNG screenshot of the top ``width`` × ``height`` pixels of the page."""
    return _run(tmp, f"--screenshot={shot}", f"--window-size={width},{height}", "--hide-scrollbars",
                page.resolve().as_uri())
