"""report.html in a real browser: headless Chromium renders it offline, every embedded plot decodes."""

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from aimc.experiment.runner import run_experiment
from aimc.experiment.spec import experiment_from_dict

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)")]

# after load, write each <img>'s natural size into the DOM (only in a copy of the report, never in the report)
PROBE = """<script>window.addEventListener("load", () => {
  const p = document.createElement("pre"); p.id = "img-probe";
  p.textContent = Array.from(document.images).map(i => i.complete + ":" + i.naturalWidth + "x" + i.naturalHeight)
    .join(" ");
  document.body.appendChild(p);
});</script>"""


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    exp = experiment_from_dict({
        "name": "browser", "seed": 2, "model": {"name": "digits_cnn"},
        "data": {"name": "digits", "batch_size": 64, "train_limit": 300},
        "training": [{"name": "fp", "kind": "fp", "epochs": 1, "optimizer": {"name": "adam", "lr": 0.003}}],
        "baselines": {"fp_digital": "fp"},
        "evaluation": [{"name": "pcm", "analog": "joshi2020", "models": {"fp_direct": "fp"},
                        "times": [25, 3600, 86400], "seeds": 3, "compensations": ["none", "gdc"]}]})
    out = run_experiment(exp, tmp_path_factory.mktemp("browser") / "run", quiet=True)
    return out / "report.html"


def test_screenshot_shows_the_plots(report, tmp_path):
    import matplotlib.image as mpimg

    shot = tmp_path / "shot.png"
    res = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,4000", "--hide-scrollbars",
                   report.resolve().as_uri())
    assert shot.is_file() and shot.stat().st_size > 10_000, res.stderr[-2000:]
    img = mpimg.imread(str(shot))[..., :3]
    assert img.shape[:2] == (4000, 1280)
    px = (img.reshape(-1, 3) * 255).round().astype(np.int32)
    non_white = (px < 245).any(axis=1)
    assert non_white.mean() > 0.05  # text, tables and plots, not a blank page
    # saturated pixels (plot lines, bands, bars) in several distinct hues
    sat = px.max(axis=1) - px.min(axis=1)
    colourful = px[sat > 80]
    assert len(colourful) > 5_000
    hues = {tuple(c // 32) for c in colourful}
    assert len(hues) >= 6


def test_dom_loads_and_every_image_decodes(report, tmp_path):
    page = report.read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    res = chromium(tmp_path, "--dump-dom", "--virtual-time-budget=5000", probe.resolve().as_uri())
    dom = res.stdout
    assert "<title>aimc report: browser</title>" in dom, res.stderr[-2000:]
    for title in ("Accuracy vs time", "Digital baselines", "GDC factors vs time", "Environment"):
        assert title in dom
    m = re.search(r'<pre id="img-probe">([^<]*)</pre>', dom)
    assert m, dom[-2000:]
    sizes = m.group(1).split()
    assert len(sizes) == page.count("<img ") == 3
    for s in sizes:
        complete, wh = s.split(":")
        w, h = (int(v) for v in wh.split("x"))
        assert complete == "true" and w > 100 and h > 100, sizes

