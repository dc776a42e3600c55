"""Decision models that ship with a model, so a fresh install abstains before anyone calibrates.

A model directory may carry its own ``factmatch_decisions.json``; the default models'
files live in ``shipped_decisions/`` (fitted by ``benchmarks/decisions.py --ship`` on the
public CheckThat! 2020 train and dev splits: the fitted numbers ship, the data does not).
Bootstrap stores the file with the version it registers, like a calibration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker.retrieval.decision import DecisionModel, read_decision_file
from worker.retrieval.tiers import Threshold

SHIPPED = Path(__file__).resolve().parent / "shipped_decisions"
IN_MODEL_DIR = "factmatch_decisions.json"


def model_key(model_ref: str) -> str:
    path = Path(model_ref)
    return path.name if path.name not in ("model", "models", "") else path.parent.name


def shipped_path(model_ref: str) -> Path:
    return SHIPPED / f"{model_key(model_ref)}.json"


def shipped_decisions(model_ref: str) -> tuple[DecisionModel, list[Threshold], dict[str, Any], Path] | None:
    """The decision model, tier cuts and fit report that came with ``model_ref``, and where; None when none did."""
    for path in (Path(model_ref) / IN_MODEL_DIR, shipped_path(model_ref)):
        if path.is_file():
            model, thresholds, report = read_decision_file(path)
            return model, thresholds, dict(report.get("fit", {})), path
    return None
