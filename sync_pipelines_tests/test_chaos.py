"""The small chaos run in CI (issue 13): benchmarks/chaos.py with a small N. 30 % faults on every
API plus SIGKILLs at random points: no duplicate, no loss, no wrong amount. The larger run's
figures are in docs/reliability.md."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRIALS = int(os.environ.get("CHAOS_TRIALS", "3"))


def _chaos_module():
    spec = importlib.util.spec_from_file_location("chaos_benchmark", ROOT / "benchmarks" / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.chaos
def test_small_chaos_run_has_no_duplicate_loss_or_wrong_amount(tmp_path: Path) -> None:
    chaos = _chaos_module()
    tally = chaos.run_chaos(trials=TRIALS, clients=6, entries=150, fault_rate=0.30, seed=7, workdir=tmp_path)
    args = argparse.Namespace(trials=TRIALS, clients=6, entries=150, fault_rate=0.30, seed=7)
    text = chaos.report(tally, args)
    assert tally.trials == TRIALS
    assert sum(tally.faults.values()) > 0, text  # faults were really injected...
    assert {k.split(":")[0] for k in tally.faults} == {"harvest", "hubspot", "quickbooks"}, text
    assert sum(tally.kills.values()) >= TRIALS, text  # ...and the posting runs really killed
    assert tally.invoices >= 3 * TRIALS, text
    assert (tally.duplicates, tally.losses, tally.wrong_amounts) == (0, 0, 0), text
