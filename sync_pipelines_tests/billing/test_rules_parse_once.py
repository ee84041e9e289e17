"""Rules parsed once per text (billing/rules.py) through libyaml (billing/yaml_decimal.py), and the
collector pause around pricing (billing/gc_pause.py)."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest
import yaml

from sync_pipelines.billing import RulesError, parse_rules
from sync_pipelines.billing import yaml_decimal
from sync_pipelines.billing.gc_pause import collection_paused

from .test_rules import DESIGN_EXAMPLE

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from reconcile import make_rules  # noqa: E402


def test_the_same_text_is_validated_once() -> None:
    first = parse_rules(DESIGN_EXAMPLE, "once.yaml")
    assert parse_rules(DESIGN_EXAMPLE, "once.yaml") is first
    assert parse_rules(DESIGN_EXAMPLE + "\n# an edit\n", "once.yaml") is not first
    other = parse_rules(DESIGN_EXAMPLE, "elsewhere.yaml")
    assert other is not first and other.source == "elsewhere.yaml" and first.source == "once.yaml"


def test_an_invalid_text_is_rejected_every_time() -> None:
    bad = DESIGN_EXAMPLE.replace("harvest_client_id: 1002", "harvest_client_id: 1001")
    for _ in range(2):
        with pytest.raises(RulesError) as err:
            parse_rules(bad, "bad.yaml")
        assert any("already mapped by clients.acme" in p for p in err.value.problems)


class _PurePythonLoader(yaml.SafeLoader):
    def __init__(self, stream) -> None:  # noqa: ANN001
        super().__init__(stream)
        self.duplicate_keys: list[str] = []


for tag, fn in ((t, f) for t, f in yaml_decimal.DecimalSafeLoader.yaml_constructors.items()
                if t in ("tag:yaml.org,2002:float", "tag:yaml.org,2002:map", "tag:yaml.org,2002:timestamp")):
    _PurePythonLoader.add_constructor(tag, fn)


@pytest.mark.parametrize("text", [
    DESIGN_EXAMPLE,
    make_rules(40, 3),
    "a: 1\na: 2\nb: {c: 1_000.50, d: 2026-13-01, e: .inf, f: 0.1}\nbase: &x {k: 1}\nm: {<<: *x, j: 2}\n",
])
def test_libyaml_reads_what_the_pure_python_loader_reads(text: str) -> None:
    assert yaml.__with_libyaml__, "PyYAML without libyaml: the rules parse falls back to the slow scanner"
    fast = yaml_decimal.DecimalSafeLoader(text)
    slow = _PurePythonLoader(text)
    try:
        assert fast.get_single_data() == slow.get_single_data()
        assert fast.duplicate_keys == slow.duplicate_keys
    finally:
        fast.dispose()
        slow.dispose()


def test_the_collector_is_paused_while_pricing_and_restored_after() -> None:
    assert gc.isenabled()
    with collection_paused():
        assert not gc.isenabled()
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError):
        with collection_paused():
            1 / 0  # noqa: B018
    assert gc.isenabled()
    gc.disable()
    try:
        with collection_paused():
            pass
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()
