"""``report.html``: one self-contained page describing a run directory written by ``aimc run``.

The page holds, in order: what the run is; accuracy vs time after programming per sweep (mean and 95 % confidence
band of the mean over seeds, per model and compensation; all curves on one axis, then one zoomed panel per
compensation); the digital baselines; the training of every stage (loss and validation metric per epoch, the digital
test accuracy of its weights); the summary tables (and the full results in a collapsed block); the cost of one
inference (energy, latency, devices and tiles from ``aimc.cost``, compared in words with the digital baseline, next to
the accuracy over time, and a per-layer energy breakdown as an inline SVG bar chart); per-layer programming error and
conductance histograms of the programmed model; the GDC factor of every tile over time; the wall times of training,
evaluation and the whole run; the resolved configuration; the environment.

Everything is inline: CSS in a ``<style>`` element, plots as base64 PNG ``data:`` URIs, no scripts and no external
resources, so the file can be mailed, archived or opened offline. It is rebuilt from the run directory's files
alone (``aimc report RUN_DIR``), never from in-memory state of the run.

Modules: :mod:`~aimc.report.files` (reading the run directory), :mod:`~aimc.report.page` (HTML and figure helpers),
:mod:`~aimc.report.accuracy`, :mod:`~aimc.report.training`, :mod:`~aimc.report.cost`, :mod:`~aimc.report.chip`
(the sections), :mod:`~aimc.report.render` (the page).
"""

from aimc.report.cost import COST_HARDWARE as COST_HARDWARE
from aimc.report.render import SECTIONS as SECTIONS
from aimc.report.render import render_report as render_report
from aimc.report.render import write_report as write_report

__all__ = ["write_report", "render_report", "SECTIONS", "COST_HARDWARE"]
