"""--storage-path with a storage URI, checked before Ray starts, against a real S3-compatible
server on 127.0.0.1 (moto's server mode): an unknown scheme, a bucket that does not exist and a
resume of a name the bucket does not hold are refused with one line naming the flag (exit 2, nothing created anywhere);
a good bucket passes; the experiment folder is the driver's local copy of ``<URI>/<name>``, and a
name already used at the URI is refused."""

from __future__ import annotations

import contextlib
import io

import pytest
from test_cli import _load_cli

from search import joint
from search.folder import base_record, check_folder, experiment_dir
from search.options import SearchOptions, check_options
from search_spaces.spec import load_spec
from trainables.contract import storage
from trainables.contract.layout import JOINT, TRAIN_TIME_ATTR


def _refusal(args: list[str]) -> tuple[int, list[str]]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = _load_cli().main(["--space", "smoke.yaml", *args])
    return status, err.getvalue().strip().splitlines()


@pytest.mark.parametrize(
    "uri, says",
    [
        ("nope://bucket/runs", "no filesystem for 'nope'://"),
        ("s3://{bucket}-missing/runs", "bucket does not exist"),
        ("s3://{bucket}/runs --resume", "holds no search (search.json); check --storage-path and --name"),
    ],
    ids=["unknown-scheme", "missing-bucket", "resume-of-nothing"],
)
def test_bad_storage_uri_is_refused_in_one_line_and_creates_nothing(s3_bucket, tmp_path, uri, says):
    import ray

    uri, *more = uri.format(bucket=s3_bucket.name).split()
    buckets = sorted(b["Name"] for b in s3_bucket.client.list_buckets()["Buckets"])
    before = sorted(tmp_path.rglob("*"))
    status, lines = _refusal(["--storage-path", uri, *more])
    assert status == 2, lines
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert lines[0].startswith("run_search.py: error: ") and "--storage-path" in lines[0] and says in lines[0]
    assert not ray.is_initialized()
    assert sorted(b["Name"] for b in s3_bucket.client.list_buckets()["Buckets"]) == buckets
    # nothing in the good bucket (a prefix that passed the probe may keep pyarrow's folder marker)
    assert [k for k in s3_bucket.keys() if k != "runs/"] == []
    assert sorted(tmp_path.rglob("*")) == before and not s3_bucket.cache.exists()


def test_a_good_bucket_passes_and_the_experiment_folder_is_its_local_copy(s3_bucket):
    uri = f"s3://{s3_bucket.name}/runs"
    options = SearchOptions(storage_path=uri)
    check_options(options)
    assert not [k for k in s3_bucket.keys() if storage.PROBE_PREFIX in k]
    spec = load_spec("smoke.yaml")
    exp_dir = experiment_dir(options, joint.default_name(spec))
    assert exp_dir == s3_bucket.cache.resolve() / "s3" / s3_bucket.name / "runs" / "smoke"
    record = base_record(spec, JOINT, options, gpus=0, study_name="smoke-1", time_attr=TRAIN_TIME_ATTR)
    assert record["storage_uri"] == uri
    check_folder(exp_dir, options, JOINT)  # nothing at <uri>/smoke yet
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="runs/smoke/search.json", Body=b"{}")
    with pytest.raises(ValueError, match=f"experiment {uri}/smoke already exists; pass --resume to continue it or"):
        check_folder(exp_dir, options, JOINT)
    assert not exp_dir.exists()
