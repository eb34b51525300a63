"""SkipLog: every skipped sample counted by reason, the first MAX_LISTED named, a sample found
while reading counted once however often it is met or reported."""

import pickle
from collections import Counter

from convergent.data.skips import MAX_LISTED, SkipLog, reason_of


def test_counts_every_sample_and_names_the_first():
    log = SkipLog()
    for i in range(MAX_LISTED + 5):
        log.add(f"f:{i}", "empty", None if i % 2 else f"empty (line {i})")
    assert log.counts == {"empty": MAX_LISTED + 5} and log.total == MAX_LISTED + 5
    assert len(log.listed) == MAX_LISTED
    assert log.listed[:2] == [("f:0", "empty (line 0)"), ("f:1", "empty")]
    assert log.describe(["not UTF-8", "empty"]) == f"{MAX_LISTED + 5} empty"
    assert SkipLog().describe(["empty"]) == "none" and SkipLog().total == 0


def test_merge_counts_each_path_once():
    """What ``record_skipped`` did: reports from workers, each path once (named at build or not)."""
    log = SkipLog()
    log.add("x", "not an image")
    assert log.merge([("a", "r"), ("x", "r"), ("a", "r")]) == 1
    assert log.merge([("a", "r")]) == 0
    assert log.merge([]) == 0
    assert log.listed == [("x", "not an image"), ("a", "r")]
    assert log.counts == {"not an image": 1, "r": 1}


def test_found_once_per_place_and_reason_from_the_detail():
    log = SkipLog()
    assert log.found("img/b.png", "unreadable", "unreadable (OSError: truncated)")
    assert not log.found("img/b.png", "unreadable", "unreadable (OSError: truncated)")  # another epoch
    assert log.merge([("img/b.png", "unreadable (OSError: truncated)"), ("img/c.png", "unreadable image (x)")]) == 1
    assert log.counts == {"unreadable": 1, "unreadable image": 1}
    assert reason_of("no caption (expected a string, got int)") == "no caption" and reason_of("empty") == "empty"


def test_given_counts_and_list_are_kept_and_copies_are_independent():
    listed = [(f"f{k}:{i}", "empty") for k in range(2) for i in range(MAX_LISTED)]  # two files' lists
    log = SkipLog(Counter(empty=3 * MAX_LISTED), listed)
    assert log.total == 3 * MAX_LISTED and len(log.listed) == 2 * MAX_LISTED
    assert log.merge([("f1:3", "empty")]) == 0  # named already
    copy = log.copy()
    copy.found("new", "unreadable")
    assert log.total == 3 * MAX_LISTED and copy.total == 3 * MAX_LISTED + 1
    assert not log.found("f0:0", "empty") and log.found("new", "unreadable")
    again = pickle.loads(pickle.dumps(log))  # DataLoader workers get copies
    assert again.counts == log.counts and again.listed == log.listed and not again.found("new", "unreadable")

