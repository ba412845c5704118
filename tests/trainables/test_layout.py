"""The experiment kind is read from search.json, the one file every search writes first."""

import json

from trainables.contract.layout import JOINT, SAMPLER, experiment_kind, read_search_record, trial_dirname


def write_search(folder, record) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "search.json").write_text(json.dumps(record))


def test_kind_is_what_search_json_says(tmp_path):
    write_search(tmp_path / "sampler", {"kind": "sampler", "spec": {}})
    write_search(tmp_path / "joint", {"kind": "joint"})
    assert experiment_kind(tmp_path / "sampler") == SAMPLER == "sampler"
    assert experiment_kind(tmp_path / "joint") == JOINT == "joint"


def test_a_search_json_without_kind_is_a_joint_search(tmp_path):
    # Folders written before the kind was recorded.
    write_search(tmp_path, {"spec": {"name": "old"}})
    assert experiment_kind(tmp_path) == "joint"


def test_no_readable_search_json_means_no_experiment(tmp_path):
    assert experiment_kind(tmp_path) is None
    assert experiment_kind(tmp_path / "missing") is None
    (tmp_path / "search.json").write_text("{not json")
    assert experiment_kind(tmp_path) is None and read_search_record(tmp_path) == {}
    (tmp_path / "search.json").write_text("[1, 2]")
    assert experiment_kind(tmp_path) is None


def test_trial_folders_are_named_by_id():
    assert trial_dirname("ab12_00003") == "trial_ab12_00003"


def test_a_deleted_checkpoint_gives_way_to_the_newest_surviving_one(tmp_path):
    from trainables.contract.layout import STATE_FILE, surviving_checkpoint

    trial = tmp_path / "trial_x"
    for name, marked in (("checkpoint_000001", True), ("checkpoint_000003", True), ("checkpoint_000004", False)):
        (trial / name).mkdir(parents=True)
        if marked:
            (trial / name / STATE_FILE).write_bytes(b"x")
    assert surviving_checkpoint(trial / "checkpoint_000001", STATE_FILE) == trial / "checkpoint_000001"
    # named by a snapshot, deleted since: the newest one that holds a state (4 is half-written)
    assert surviving_checkpoint(trial / "checkpoint_000002", STATE_FILE) == trial / "checkpoint_000003"
    assert surviving_checkpoint(tmp_path / "other" / "checkpoint_000001", STATE_FILE) is None
