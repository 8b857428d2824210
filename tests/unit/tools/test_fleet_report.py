"""tools/fleet: the scaling table and the no-op ratios as the terminal shows them."""

from tools.fleet.__main__ import table_lines

REPORT = {
    "scaling": [
        {"n": 1, "batch": "all", "seconds": 40.0, "fixed": 1},
        {"n": 2, "batch": "all", "seconds": 50.0, "fixed": 2},
        {"n": 2, "batch": "1", "seconds": 80.0, "fixed": 2},
        {"n": 3, "batch": "1", "seconds": 120.0, "fixed": 2},
    ],
    "noop": {
        "reps": 5,
        "median": {
            "mm_noop": 2.4,
            "mm_baseline": 2.0,
            "mm_preview": 2.6,
            "mm_baseline_preview": 2.2,
            "ssh_noop": 8.0,
            "ssh_baseline": 7.0,
            "ssh_preview": 8.1,
            "ssh_baseline_preview": 7.2,
        },
        "ratio": {"mm_noop": 1.2, "mm_preview": 1.18, "ssh_noop": 1.14, "ssh_preview": 1.12},
    },
}


def test_each_row_is_compared_with_one_host():
    """N = 1 has one row (batch all and 1 are the same run): every batch kind is divided by it."""
    rows = {tuple(line.split()[:2]): line.split() for line in table_lines(REPORT)[3:7]}
    assert rows[("2", "all")][3] == "1.25"
    assert rows[("2", "1")][3] == "2.00"
    assert rows[("3", "1")][3:] == ["3.00", "2/3"]  # a host left unfixed shows


def test_the_noop_ratios_of_both_transports_side_by_side():
    text = "\n".join(table_lines(REPORT))
    assert "master/minion  no-op 2.40 s vs 2.00 s = 1.2x; test=True 2.60 s vs 2.20 s" in text
    assert "salt-ssh       no-op 8.00 s vs 7.00 s = 1.14x" in text
