"""nodeset.fold: sub-node names written compactly, as ClusterShell's node sets."""

import random

from pegasus.nodeset import fold


def test_numeric_runs_become_ranges():
    names = [f"node-{i}" for i in [*range(1, 38), *range(40, 51)]]
    assert fold(names) == "node-[1-37,40-50]"


def test_order_of_the_names_does_not_matter_within_a_family():
    names = [f"node-{i}" for i in (5, 1, 3, 2, 9)]
    random.Random(7).shuffle(names)
    assert fold(names) == "node-[1-3,5,9]"


def test_one_name_has_no_brackets():
    assert fold(["node-7"]) == "node-7"
    assert fold([]) == ""


def test_zero_padded_numbers_keep_their_width():
    assert fold([f"node{i:02d}" for i in range(1, 11)]) == "node[01-10]"
    assert fold(["node9", "node10", "node11"]) == "node[9-11]"


def test_padded_and_unpadded_numbers_are_different_names():
    assert fold(["node1", "node01", "node02", "node2"]) == "node[1-2,01-02]"
    assert fold(["node9", "node010"]) == "node[9,010]"


def test_labels_with_parameters_are_kept_whole():
    names = ["[gpu-1 (dev=0)]", "[gpu-1 (dev=1)]", "gpu-2", "gpu-3"]
    assert fold(names) == "[gpu-1 (dev=0)],[gpu-1 (dev=1)],gpu-[2-3]"


def test_mixed_names_fold_each_family_in_order_of_first_appearance():
    names = ["web-2", "db-1", "web-1", "localhost", "db-2", "rack1-node3", "rack1-node4",
             "localhost#1", "localhost#2", "10.0.0.5", "10.0.0.6"]
    assert fold(names) == ("web-[1-2],db-[1-2],localhost,rack1-node[3-4],localhost#[1-2],"
                           "10.0.0.[5-6]")


def test_a_number_inside_a_name_is_kept_and_only_the_last_one_folds():
    assert fold(["r1n1", "r1n2", "r2n1"]) == "r1n[1-2],r2n1"
    assert fold(["a1b", "a2b", "a3c"]) == "a[1-2]b,a3c"
