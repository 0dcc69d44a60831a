"""Collection rules for the whole suite."""
from pathlib import Path

TRACES = Path(__file__).resolve().parent / "traces"


def pytest_ignore_collect(collection_path, config):
    """Every test under tests/traces is slow (its conftest marks them all: each runs a torch
    model), so the fast suite (`-m "not slow"`) skips the folder instead of importing torch
    and transformers (seconds) to deselect everything in it."""
    if " ".join(config.getoption("markexpr", "").split()) == "not slow" and Path(collection_path) == TRACES:
        return True
    return None
