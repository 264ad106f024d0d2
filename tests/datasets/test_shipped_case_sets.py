"""The shipped case sets are case-set files read by the general loader (issue
15, item 2): the same cases, schema and encoded matrices as their source
readers give, and the files are what the preparation writes."""

import numpy as np
import pytest

from engine.datasets import SHIPPED, load_shipped, shipped_case_file, write_shipped_case_sets


@pytest.mark.parametrize("name", list(SHIPPED))
def test_the_case_set_file_gives_the_source_readers_cases_and_encoding(name):
    source = SHIPPED[name][1]()
    shipped = load_shipped(name)
    assert shipped.name == source.name and shipped.schema == source.schema
    assert shipped.table["case_id"].tolist() == source.table["case_id"].tolist()
    assert shipped.table["decision"].tolist() == source.table["decision"].tolist()
    a, b = shipped.encode(), source.encode()
    assert a.columns == b.columns and a.constant == b.constant and a.absent == b.absent
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.mean, b.mean)


def test_the_shipped_files_are_what_the_preparation_writes(tmp_path):
    for path in write_shipped_case_sets(tmp_path):
        rel = path.relative_to(tmp_path)
        name = next(n for n, (r, *_) in SHIPPED.items() if r == str(rel))
        shipped = shipped_case_file(name)
        assert path.read_text() == shipped.read_text(), f"{rel} differs from the shipped file"
        csv = path.with_suffix(".csv")
        assert csv.read_text() == shipped.with_suffix(".csv").read_text()
