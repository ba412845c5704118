"""The confirmation stage before and after its Ray tasks (search/confirmation/stage.py): settings sized
to the budget, the spec's confirm section, which trials it confirms, its cost, the command line's
refusals, and the summary it writes from per-(trial, seed) results, read back by analysis."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO
from fake_experiment import SMOKE_SPEC, smoke_like

from analysis.load import load_experiment
from analysis.rank import rank_trials
from analysis.reporting.confirm import answer_items, read_confirmation
from search import estimate
from search.confirmation import results
from search.confirmation import select as confirm_select
from search.confirmation import stage as confirm
from search_spaces import confirm_settings
from search_spaces.errors import SpecError
from search_spaces.loading import parse_spec
from trainables.contract.layout import CONFIRM_DIR, CONFIRM_SUMMARY, CONFIRM_TOP, WARM_2019, WARM_NCSNV2
from trainables.contract.metrics import TIED, WORSE
from trainables.scoring import quality
from trainables.tools import known_answers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_defaults_are_sized_to_the_budget_and_the_spec_or_flags_override_them():
    preview = {"budget_mode": "preview", "spec": {"budget": {"eval_samples": 100}}}
    assert confirm_settings.settings_for(preview) == confirm_settings.ConfirmSettings(top_k=3, seeds=3, samples=400)
    full = {"budget_mode": "full", "spec": {"budget": {"eval_samples": 1000}}}
    assert confirm_settings.settings_for(full).samples == 5000
    section = {**preview, "spec": {**preview["spec"], "confirm": {"top_k": 2, "seeds": 5, "samples": 900}}}
    assert confirm_settings.settings_for(section) == confirm_settings.ConfirmSettings(top_k=2, seeds=5, samples=900)
    assert confirm_settings.settings_for(section, top_k=4, seeds=2, samples=64) == confirm_settings.ConfirmSettings(
        4, 2, 64
    )


@pytest.mark.parametrize(
    ("request_", "flag"),
    [({"top_k": 0}, "--top-k 0"), ({"seeds": 101}, "--seeds 101"), ({"samples": 5}, "--samples 5")],
)
def test_bad_requests_are_refused_naming_the_flag(request_, flag):
    with pytest.raises(ValueError, match=f"^{flag}: ") as err:
        confirm_settings.settings_for({}, **request_)
    assert "\n" not in str(err.value)


def _spec(confirm_section):
    raw = json.loads(json.dumps(SMOKE_SPEC))
    if confirm_section is not None:
        raw["confirm"] = confirm_section
    return parse_spec(raw, file="smoke.yaml", source=None)


def test_the_spec_confirm_section_asks_for_the_stage():
    spec = _spec({"top_k": 2, "seeds": 4})
    assert (spec.confirm.top_k, spec.confirm.seeds, spec.confirm.samples) == (2, 4, None)
    assert _spec({}).confirm.top_k == 3
    assert spec.to_dict()["confirm"] == {"top_k": 2, "seeds": 4}
    assert confirm_settings.requested(spec.confirm, None) and not confirm_settings.requested(spec.confirm, False)
    assert not confirm_settings.requested(_spec(None).confirm, None) and confirm_settings.requested(None, True)


@pytest.mark.parametrize(
    ("section", "key"),
    [({"top": 3}, "confirm.top"), ({"seeds": 0}, "confirm.seeds"), ({"samples": 3}, "confirm.samples")],
)
def test_a_bad_confirm_section_names_its_key(section, key):
    with pytest.raises(SpecError, match=key.replace(".", r"\.")):
        _spec(section)


def test_the_top_trials_and_the_warm_starts_are_chosen_with_their_cost(tmp_path):
    exp = smoke_like(tmp_path)
    kind, metric, mode, trials, notices = confirm_select.select_trials(exp.exp_dir, top_k=2)
    assert (kind, metric, mode, notices) == ("joint", "kid", "min", [])
    # best kept checkpoints by kid: 00002 (0.10), 00005 (0.11); the warm starts 00000 and 00001 follow
    assert [t.trial_id for t in trials] == ["5d0b1_00002", "5d0b1_00005", "5d0b1_00000", "5d0b1_00001"]
    assert [t.roles for t in trials] == [[CONFIRM_TOP], [CONFIRM_TOP], [WARM_2019], [WARM_NCSNV2]]
    assert [t.search_rank for t in trials] == [1, 2, 3, 4]
    assert all(t.nfe_per_sample == 4 * 2 + 1 for t in trials)  # L = 4 levels x T = 2, denoised
    assert all(t.checkpoint.endswith("checkpoint_000003") for t in trials[:3])
    plan = confirm.plan_confirmation(
        exp.exp_dir, confirm_settings.ConfirmSettings(2, 3, 256), seconds_per_image_eval=1e-4
    )
    assert plan.cost["network_evals"] == 4 * 3 * 256 * 9 and plan.cost["tasks"] == 12
    assert plan.cost["sampling_seconds"] == pytest.approx(4 * 3 * 256 * 9 * 1e-4)
    _, _, _, many, notices = confirm_select.select_trials(exp.exp_dir, top_k=10)
    assert len(many) == 6 and notices == ["--top-k 10: only 6 trial(s) have something to sample; confirming them all"]


def _cli(*args):
    return subprocess.run(
        [sys.executable, "platform/confirm.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_the_command_line_refuses_bad_input_with_one_line_and_writes_nothing(tmp_path):
    exp = smoke_like(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, start in (
        ((str(exp.exp_dir), "--top-k", "0"), "confirm.py: error: --top-k 0: must be at least 1"),
        ((str(exp.exp_dir), "--samples", "2"), "confirm.py: error: --samples 2: must be at least 6"),
        ((str(tmp_path / "nowhere"),), "confirm.py: error: "),
        ((str(empty),), "confirm.py: error: "),
        ((str(exp.exp_dir), "--seeds", "x"), "confirm.py: error: argument --seeds: invalid int value"),
    ):
        done = _cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith(start) and done.stderr.count("\n") == 1, done.stderr
        assert done.stdout == ""
    assert not (exp.exp_dir / CONFIRM_DIR).exists() and not list(empty.iterdir())


def test_run_search_takes_confirm_and_no_confirm():
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_search_for_confirm", REPO / "platform" / "run_search.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.parse_args(["--space", "smoke.yaml"]).confirm is None  # as the spec says
    assert cli.parse_args(["--space", "smoke.yaml", "--confirm"]).confirm is True
    assert cli.parse_args(["--space", "sigmas.yaml", "--no-confirm"]).confirm is False


def _record(plan, trial, seed, feats, fid_inf=1.0):
    return {
        "trial_id": trial.trial_id,
        "seed": seed,
        "samples": plan.settings.samples,
        "checkpoint": str(confirm.Path(trial.checkpoint).resolve()),
        "sampler": trial.sampler,
        "noise": {"search_seed": plan.search_seed},
        "nfe_per_sample": trial.nfe_per_sample,
        "network_evals": trial.nfe_per_sample * plan.settings.samples,
        "sample_seconds": 1.0,
        "score_seconds": 0.5,
        "diverged": False,
        "metrics": {"protocol_id": "p0", "kid": 0.0},
        "fid_inf": {"fid_inf": fid_inf},
    }


def test_results_on_disk_are_reused_and_summarised_into_the_verdicts_analysis_reads(tmp_path):
    """Per-(trial, seed) results as the Ray tasks return them, from real MNIST features: the two
    top trials' samples are disjoint sets of real test digits, the warm starts' are the same digits
    blurred (1.5 px). Nothing is missing, so no task (and no cluster) runs; the summary calls the
    real ones tied and the blurred ones worse, and the report's Answer says so."""
    exp = smoke_like(tmp_path)
    settings = confirm_settings.ConfirmSettings(top_k=2, seeds=2, samples=200, resamples=200)
    plan = confirm.plan_confirmation(exp.exp_dir, settings)
    ref = quality.mnist_test_reference("cpu")
    from trainables.contract.data import load_mnist

    images, _ = load_mnist(train=False)
    with torch.no_grad():
        logits = quality._net("cpu").logits_from_features(ref.features[:800])
    blurred = quality.embed(known_answers.gaussian_blur(images[:400].float() / 255.0, 1.5).clamp(0, 1), "cpu")
    for k, trial in enumerate(plan.trials):
        for seed in range(settings.seeds):
            if CONFIRM_TOP in trial.roles:
                part = slice(400 * k + 200 * seed, 400 * k + 200 * (seed + 1))
                feats, logit = ref.features[part], logits[part]
            else:
                feats, logit = blurred[0][200 * seed : 200 * (seed + 1)], blurred[1][200 * seed : 200 * (seed + 1)]
            out = {"record": _record(plan, trial, seed, feats), "features": feats, "logits": logit, "grid": b"png"}
            results.write_result(exp.exp_dir, trial.trial_id, seed, settings.samples, out)
    said = []
    path = confirm.run_confirmation(plan, options=None, say=said.append)
    assert said[0] == "confirmation: 8 of 8 (trial, seed) results already on disk; 0 to sample"
    summary = json.loads(path.read_text())
    assert path.name == CONFIRM_SUMMARY and summary["incomplete"] == []
    by_id = {t["trial_id"]: t for t in summary["trials"]}
    best = summary["best"]
    assert best in ("5d0b1_00002", "5d0b1_00005")
    other = "5d0b1_00005" if best == "5d0b1_00002" else "5d0b1_00002"
    assert by_id[other]["versus_best"]["kid"]["verdict"] == TIED
    for warm in ("5d0b1_00000", "5d0b1_00001"):
        assert by_id[warm]["versus_best"]["kid"]["verdict"] == WORSE
        assert by_id[warm]["versus_best"]["fid"]["verdict"] == WORSE
    assert [t["trial_id"] for t in summary["trials"]][:2] == sorted([best, other], key=lambda t: t != best)
    assert by_id[best]["fid_inf"] == {"mean": 1.0, "sd": 0.0, "per_seed": [1.0, 1.0]}
    assert summary["network_evals"] == 4 * 2 * 200 * 9
    # a seed missing on disk: that trial is incomplete and left out of the verdicts
    results.result_paths(exp.exp_dir, "5d0b1_00000", 1, 200)[0].unlink()
    missing = [(t.trial_id, s) for t, s in plan.jobs() if results.read_result(exp.exp_dir, t, s, 200, 0) is None]
    assert missing == [("5d0b1_00000", 1)]
    summary = json.loads(confirm.summarise(exp.exp_dir, plan).read_text())
    assert summary["incomplete"] == ["5d0b1_00000"]
    assert next(t for t in summary["trials"] if t["trial_id"] == "5d0b1_00000")["values"] is None
    conf = read_confirmation(exp.exp_dir)
    assert conf.best["trial_id"] == best
    loaded = load_experiment(exp.exp_dir)
    answer = "\n".join(answer_items(loaded, rank_trials(loaded.trials), []))
    assert answer.startswith(f"Confirmed best setting: trial {best}")
    assert "Statistically tied with it" in answer and other in answer
    assert "Versus the NCSNv2 recommended setting (Song & Ermon 2020) (trial 5d0b1_00001" in answer
    assert "Not confirmed yet (seeds missing): 5d0b1_00000" in answer


def test_a_search_whose_best_samples_are_far_from_digits_gets_a_pipeline_sized_confirmation(tmp_path):
    exp = smoke_like(tmp_path)
    full = confirm_settings.ConfirmSettings(3, 3, 400)
    plan = confirm.plan_confirmation(exp.exp_dir, full)
    # the fake search's best checkpoint scores as digits do: the full size stays
    assert confirm.pipeline_size(plan, None, eval_samples=100) == (None, "")
    best = next(t for t in plan.trials if t.search_rank == 1)
    path = tmp_path / best.checkpoint / "metrics.json"
    record = json.loads(path.read_text())
    record["metrics"].update(class_coverage=0.12, recall=0.0)  # a CPU preview's blobs (kid kept: the ranking)
    path.write_text(json.dumps(record))
    plan = confirm.plan_confirmation(exp.exp_dir, full)
    small, why = confirm.pipeline_size(plan, None, eval_samples=100)
    assert small == confirm_settings.ConfirmSettings(3, 2, 100)  # same trials, 2 seeds of eval_samples
    assert why.startswith("confirmation: sized as a pipeline check (2 seeds x 100 samples, not 3 x 400)")
    assert "class coverage 0.12 (below 0.5" in why and "recall 0 (below 0.01" in why
    assert why.endswith(f"python platform/confirm.py {exp.exp_dir} --seeds 3 --samples 400")
    assert confirm.plan_confirmation(exp.exp_dir, small).cost["network_evals"] * 6 == plan.cost["network_evals"]
    # a sample count the spec's confirm section asks for is kept
    assert confirm.pipeline_size(plan, _spec({"samples": 400}).confirm, eval_samples=100) == (None, "")
    assert confirm_settings.pipeline_sized(confirm_settings.ConfirmSettings(3, 1, 50), 100).samples == 50  # never more


def test_the_estimate_before_a_search_counts_each_warm_start_s_own_network_evaluations():
    class Estimate:  # what estimate_cost measured: the typical trial's config and rates
        config = {"num_levels": 10, "n_steps_each": 1, "denoise": True}
        nfe_per_sample = 11

    warm = [{"num_levels": 10}, {"num_levels": 95}]  # the 2019 ladder and NCSNv2's
    assert estimate.confirm_nfes(Estimate, top_k=3, warm=warm, num_trials=6) == [96, 11, 11, 11, 11]
    assert estimate.confirm_nfes(Estimate, top_k=3, warm=warm, num_trials=2) == [96, 11]
    line = estimate.cost_line(confirm_settings.ConfirmSettings(3, 2, 100), [96, 11, 11], 1e-3)
    assert "up to 3 trials (top 3 + warm starts) x 2 seeds x 100 samples x 11-96 network evaluations" in line
    assert f"= {2 * 100 * (96 + 22):,} network evaluations" in line
    # 23,600 passes at 1 ms, 2 tasks at a time (11.8 s), and 3 rounds of 6 tasks at 5 s each: 26.8 s
    line = estimate.cost_line(confirm_settings.ConfirmSettings(3, 2, 100), [96, 11, 11], 1e-3, 2, 5.0)
    assert line.endswith("~27 s with 2 task(s) at a time at the measured rate"), line
