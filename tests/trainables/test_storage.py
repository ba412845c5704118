"""trainables/contract/storage.py against a real S3-compatible server on 127.0.0.1 (moto's server mode):
what goes up comes back byte for byte, the training state is left out of a download, a probe leaves
no file behind, and a node that does not see the driver's probe file says so."""

from __future__ import annotations

import pytest

from trainables.contract import storage


def test_uris_and_their_local_copies(tmp_path, monkeypatch):
    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))
    assert storage.is_uri("s3://bucket/runs") and storage.is_uri("gs://b/p") and storage.is_uri("file:///tmp/x")
    assert not storage.is_uri("./runs") and not storage.is_uri("/shared/runs") and not storage.is_uri("s3:runs")
    assert storage.join("s3://bucket/runs/", "smoke") == "s3://bucket/runs/smoke"
    copy = storage.local_copy("s3://bucket/runs/../smoke")
    assert copy == (tmp_path / "cache" / "s3" / "bucket" / "runs" / "smoke").resolve()
    with pytest.raises(ValueError, match="no filesystem for 'nope'://"):
        storage.filesystem("nope://bucket/runs")


def test_upload_then_download_without_the_training_state(s3_bucket, tmp_path):
    local = tmp_path / "exp"
    (local / "trial_a" / "checkpoint_000000").mkdir(parents=True)
    files = {
        "search.json": b'{"kind": "joint"}',
        "trial_a/result.json": b'{"kid": 1.5}\n',
        "trial_a/checkpoint_000000/metrics.json": b"{}",
        "trial_a/checkpoint_000000/state.pt": bytes(range(256)) * 10,
    }
    for name, data in files.items():
        (local / name).write_bytes(data)
    uri = f"s3://{s3_bucket.name}/runs/exp"
    assert storage.upload(local, uri, ["search.json", "trial_a", "missing.txt"]) == ["search.json", "trial_a"]
    assert s3_bucket.keys("runs/exp/") == sorted(f"runs/exp/{name}" for name in files)
    assert s3_bucket.read("runs/exp/trial_a/checkpoint_000000/state.pt") == files["trial_a/checkpoint_000000/state.pt"]
    back = tmp_path / "back"
    assert storage.download(uri, back) == 3
    assert not (back / "trial_a" / "checkpoint_000000" / "state.pt").exists()
    for name, data in files.items():
        if not name.endswith("state.pt"):
            assert (back / name).read_bytes() == data
    assert storage.exists(uri) and not storage.exists(f"s3://{s3_bucket.name}/runs/other")
    with pytest.raises(ValueError, match="holds no files"):
        storage.download(f"s3://{s3_bucket.name}/runs/other", tmp_path / "none")


def test_probe_leaves_no_file_and_fails_on_a_missing_bucket(s3_bucket):
    storage.probe(f"s3://{s3_bucket.name}/runs")
    assert not [k for k in s3_bucket.keys() if storage.PROBE_PREFIX in k]
    with pytest.raises(OSError, match="bucket does not exist"):
        storage.probe(f"s3://{s3_bucket.name}-missing/runs")
    with pytest.raises(ValueError, match="cannot write, read and delete a probe file there"):
        storage.probe_within(f"s3://{s3_bucket.name}-missing/runs", timeout_s=20)


def test_a_node_that_cannot_see_the_drivers_file_says_so(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "from-driver").write_bytes(b"token")
    assert storage.node_probe(str(shared), "from-driver", b"token") is None
    assert sorted(p.name for p in shared.iterdir()) == ["from-driver"]  # its own probe is gone
    elsewhere = tmp_path / "elsewhere"  # what a node without the mount sees at that path
    elsewhere.mkdir()
    assert storage.node_probe(str(elsewhere), "from-driver", b"token") == "does not see the driver's probe file there"
    (elsewhere / "from-driver").write_bytes(b"another")
    assert "other bytes" in storage.node_probe(str(elsewhere), "from-driver", b"token")


def _objects(bucket, prefix: str) -> list[str]:
    """The keys that hold data (pyarrow may leave empty folder markers, keys ending in /)."""
    return [k for k in bucket.keys(prefix) if not k.endswith("/")]


def test_move_takes_a_folder_with_its_training_state_and_delete_a_file(s3_bucket):
    uri = f"s3://{s3_bucket.name}/runs/exp"
    for key, body in {"trial_a/result.json": b"{}\n", "trial_a/checkpoint_000000/state.pt": b"\x00" * 1000}.items():
        s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=f"runs/exp/{key}", Body=body)
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="runs/exp/search.json", Body=b"{}")
    assert storage.move(f"{uri}/trial_a", f"{uri}/orphaned/trial_a") == 2
    assert _objects(s3_bucket, "runs/exp/") == [
        "runs/exp/orphaned/trial_a/checkpoint_000000/state.pt",
        "runs/exp/orphaned/trial_a/result.json",
        "runs/exp/search.json",
    ]
    assert s3_bucket.read("runs/exp/orphaned/trial_a/checkpoint_000000/state.pt") == b"\x00" * 1000
    assert storage.move(f"{uri}/search.json", f"{uri}/orphaned/search.json") == 1  # a file
    assert storage.move(f"{uri}/missing", f"{uri}/orphaned/missing") == 0
    storage.delete(f"{uri}/orphaned/trial_a/result.json")
    storage.delete(f"{uri}/orphaned/trial_a/result.json")  # gone already: nothing
    assert _objects(s3_bucket, "runs/exp/") == [
        "runs/exp/orphaned/search.json",
        "runs/exp/orphaned/trial_a/checkpoint_000000/state.pt",
    ]
