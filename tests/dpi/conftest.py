from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PCAPS = Path(__file__).resolve().parents[1] / "data" / "pcaps"


def load_generator() -> ModuleType:
    """The committed capture generator (tests/data/pcaps/generate.py), imported by path."""
    name = "dpi_pcap_generate"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PCAPS / "generate.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
