"""search/durability/mirror.py against a real S3-compatible server on 127.0.0.1 (moto's server mode):
a resume of a search kept in a bucket pulls it into the local copy (no training state; the
driver's own files kept only when they belong to the same search) and pushes the recovery steps'
changes back: moves on the server, rewritten files uploaded, removed files deleted."""

from __future__ import annotations

import json

from search.durability import mirror
from trainables.contract.layout import DRIVER_FILE, SEARCH_FILE, STUDY_FILE

BUCKET_FILES = {
    SEARCH_FILE: json.dumps({"study_name": "smoke-1"}).encode(),
    STUDY_FILE: b"the bucket's study",
    "experiment_state-1.json": b'{"trial_data": []}',
    "trial_a/result.json": b'{"iterations": 10}\n',
    "trial_a/checkpoint_000000/state.pt": b"\x01" * 500,
    "trial_a/checkpoint_000000/metrics.json": b"{}",
    "trial_b/result.json": b'{"iterations": 10}\n',
}


def _fill(bucket) -> str:
    for key, body in BUCKET_FILES.items():
        bucket.client.put_object(Bucket=bucket.name, Key=f"runs/smoke/{key}", Body=body)
    return f"s3://{bucket.name}/runs"


def test_a_folder_is_not_mirrored(tmp_path):
    pulled = mirror.pull(str(tmp_path), tmp_path / "smoke")
    assert pulled.remote is None and pulled.push() == {"moved": 0, "uploaded": 0, "deleted": 0}
    assert not (tmp_path / "smoke").exists()


def test_pull_into_another_machine_takes_everything_but_the_training_state(s3_bucket, tmp_path):
    uri = _fill(s3_bucket)
    exp_dir = tmp_path / "copy" / "smoke"
    pulled = mirror.pull(uri, exp_dir)
    assert pulled.remote == f"{uri}/smoke"
    files = sorted(p.relative_to(exp_dir).as_posix() for p in exp_dir.rglob("*") if p.is_file())
    assert files == sorted(k for k in BUCKET_FILES if not k.endswith("state.pt"))
    assert (exp_dir / STUDY_FILE).read_bytes() == b"the bucket's study"
    assert mirror.pull(uri, tmp_path / "copy" / "other").remote is None  # nothing of that name there


def test_pull_keeps_the_drivers_own_files_of_the_same_search_and_replaces_the_rest(s3_bucket, tmp_path):
    uri = _fill(s3_bucket)
    exp_dir = tmp_path / "copy" / "smoke"
    (exp_dir / "trial_old").mkdir(parents=True)
    (exp_dir / "trial_old" / "result.json").write_text("{}")  # a stale copy of Ray's files
    (exp_dir / SEARCH_FILE).write_text(json.dumps({"study_name": "smoke-1"}))
    (exp_dir / STUDY_FILE).write_bytes(b"the local, newer study")
    (exp_dir / DRIVER_FILE).write_text("{}")
    mirror.pull(uri, exp_dir)
    assert (exp_dir / STUDY_FILE).read_bytes() == b"the local, newer study"
    assert (exp_dir / DRIVER_FILE).exists() and not (exp_dir / "trial_old").exists()
    assert (exp_dir / "trial_b" / "result.json").read_bytes() == BUCKET_FILES["trial_b/result.json"]
    # a local copy of another search (another study name) gives way to the bucket's entirely
    (exp_dir / SEARCH_FILE).write_text(json.dumps({"study_name": "smoke-0"}))
    mirror.pull(uri, exp_dir)
    assert (exp_dir / STUDY_FILE).read_bytes() == b"the bucket's study"
    assert not (exp_dir / DRIVER_FILE).exists()


def test_push_writes_the_recovery_steps_changes_to_the_bucket(s3_bucket, tmp_path):
    uri = _fill(s3_bucket)
    exp_dir = tmp_path / "copy" / "smoke"
    pulled = mirror.pull(uri, exp_dir)
    # what the recovery steps do: a trial folder aside, the snapshot rewritten, a file removed
    (exp_dir / "orphaned").mkdir()
    (exp_dir / "trial_b").rename(exp_dir / "orphaned" / "trial_b")
    pulled.moved([("trial_b", "orphaned/trial_b")])
    (exp_dir / "experiment_state-1.json").write_text('{"trial_data": [["TERMINATED"]]}')
    (exp_dir / "trial_a" / "checkpoint_000000" / "metrics.json").unlink()
    (exp_dir / STUDY_FILE).write_bytes(b"changed by the steps")  # the driver's own: copied by the search itself
    assert pulled.push() == {"moved": 1, "uploaded": 1, "deleted": 1}
    # (pyarrow may leave empty folder markers, keys ending in /: no data)
    keys = {k.removeprefix("runs/smoke/") for k in s3_bucket.keys("runs/smoke/") if not k.endswith("/")}
    assert keys == {
        SEARCH_FILE,
        STUDY_FILE,
        "experiment_state-1.json",
        "trial_a/result.json",
        "trial_a/checkpoint_000000/state.pt",  # never pulled, never deleted
        "orphaned/trial_b/result.json",
    }
    assert s3_bucket.read("runs/smoke/experiment_state-1.json") == b'{"trial_data": [["TERMINATED"]]}'
    assert s3_bucket.read(f"runs/smoke/{STUDY_FILE}") == b"the bucket's study"
    assert pulled.push() == {"moved": 0, "uploaded": 0, "deleted": 0}  # nothing new to write
