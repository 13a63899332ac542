"""The mutation check's fault table (tests/mutation_faults.py) parses and still fits the code: every snippet is found once.

Running the faults themselves is ``scripts/mutate.py`` (minutes, not part of the suite); this only keeps the table
from going stale silently when the code it names changes.
"""

from __future__ import annotations

from mutation import baseline_groups, problems
from mutation_faults import FAULTS


def test_fault_table_is_current():
    assert len(FAULTS) >= 30
    assert problems() == []


def test_every_fault_has_a_selection_and_a_description():
    for fault in FAULTS:
        assert fault.select.startswith("tests/test_") and fault.what, fault.id
    assert sum(len(args) > 0 for args in baseline_groups(FAULTS)) == len({f.select for f in FAULTS})
