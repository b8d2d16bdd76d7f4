"""The application the flight recorder's server tests serve under uvicorn: the endpoints of
`tests/sampling_support.py` (DEBUG lines, then a 200, a 500, an exception, ...), with the
flight recorder on (its settings from the environment, JSON lines on stdout)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fapilog
from sampling_support import make_app

app = make_app()
fapilog.configure_logging(app=app, request={"buffer": {"enabled": True}})
