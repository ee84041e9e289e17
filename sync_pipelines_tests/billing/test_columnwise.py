"""The column-wise pricing paths (billing/lines.py, invoices.py, rates.py): the same drafts
whatever the order of the entries, and the shortcuts equal to what they stand in for."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from sync_pipelines import money
from sync_pipelines.billing import invoice_payload
from sync_pipelines.billing.lines import _by_line_then_entry

from .test_properties import PROPS, _engine, scenario


def _frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert a.dtypes.to_dict() == b.dtypes.to_dict()
    assert len(a) == len(b)
    for col in a.columns:
        left, right = a[col].tolist(), b[col].tolist()
        for x, y in zip(left, right):
            assert type(x) is type(y), (col, x, y)
            assert (x is pd.NA and y is pd.NA) or x == y, (col, x, y)
            if hasattr(x, "as_tuple"):  # Decimals: the same digits and exponent, as the payload shows them
                assert x.as_tuple() == y.as_tuple(), (col, x, y)


@PROPS
@given(scenario(), st.randoms(use_true_random=False))
def test_the_order_of_the_entries_changes_nothing(sc, rnd):
    yaml_text, rows, deals, history = sc
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    _, first = _engine(yaml_text, sorted(rows, key=lambda r: r["entry_id"]), deals, history)
    _, second = _engine(yaml_text, shuffled, deals, history)
    _frames_equal(first.lines, second.lines)
    _frames_equal(first.invoices, second.invoices)
    for key in first.invoices["invoice_key"]:
        ref = {"value": "1", "name": "x"}
        assert money.dumps(invoice_payload(first, key, ref), sort_keys=True) == \
            money.dumps(invoice_payload(second, key, ref), sort_keys=True)
    by_id = lambda r: r.entries.sort_values("entry_id").reset_index(drop=True)  # noqa: E731
    _frames_equal(by_id(first)[["entry_id", "status", "reason", "invoice_key", "line_no"]],
                  by_id(second)[["entry_id", "status", "reason", "invoice_key", "line_no"]])


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 40)), max_size=60, unique_by=lambda t: t[1]),
       st.booleans())
def test_line_order_shortcut_equals_the_two_key_sort(pairs, entry_sorted):
    if entry_sorted:
        pairs = sorted(pairs, key=lambda t: t[1])
    gid = np.array([g for g, _ in pairs], dtype=np.int64)
    eid = np.array([e for _, e in pairs], dtype=np.int64)
    assert _by_line_then_entry(gid, eid).tolist() == np.lexsort((eid, gid)).tolist()
