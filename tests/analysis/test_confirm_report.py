"""The confirmation in the report and the closing summary (analysis/reporting/confirm.py), and the pipeline
check, on experiment folders written in the real on-disk format by tests/fake_experiment.py."""

import pytest
from fake_experiment import SMOKE_TRIALS, FakeExperiment, sampler_like, smoke_like

from analysis.load import load_experiment
from analysis.rank import rank_trials
from analysis.reporting.confirm import (
    FAR_FROM_DIGITS,
    answer_items,
    far_from_digits,
    read_confirmation,
    sections,
    warning_blocks,
)
from analysis.reporting.report import write_report
from analysis.reporting.summary import closing_summary, confirmation_summary
from trainables.contract.layout import CONFIRM_TOP, REPORT_MD, WARM_2019, WARM_NCSNV2, WARM_TECHNIQUE4
from trainables.contract.metrics import TIED, WORSE

BEST, TIED_ID, W2019, WV2 = "5d0b1_00002", "5d0b1_00005", "5d0b1_00000", "5d0b1_00001"


def _entry(trial_id, roles, search_rank, value, half, verdict, **more):
    return {
        "trial_id": trial_id,
        "roles": roles,
        "search_rank": search_rank,
        "value": value,
        "half": half,
        "verdict": verdict,
        **more,
    }


def _confirmed(root, **options):
    """A smoke search confirmed (best first, as search/confirmation/stage.py sorts): the best, one
    trial tied with it, the NCSNv2 warm start tied, the 2019 one worse."""
    exp = smoke_like(root)
    exp.confirmation(
        [
            _entry(BEST, [CONFIRM_TOP], 1, 0.10, 0.02, None),
            _entry(TIED_ID, [CONFIRM_TOP], 2, 0.11, 0.02, TIED),
            _entry(WV2, [WARM_NCSNV2], 4, 0.12, 0.03, TIED),
            _entry(W2019, [CONFIRM_TOP, WARM_2019], 3, 0.2, 0.02, WORSE),
        ],
        **options,
    )
    return exp


def _answer_parts(markdown: str) -> list[str]:
    return markdown.split("## Answer\n\n", 1)[1].split("\n## ", 1)[0].split("\n\n")


def _answer(markdown: str) -> list[str]:
    bullets = next(part for part in _answer_parts(markdown) if part.startswith("- "))
    return [line[2:] for line in bullets.splitlines()]


def test_the_answer_leads_with_the_confirmed_best_its_ties_and_the_warm_start_verdicts(tmp_path):
    exp = _confirmed(tmp_path)
    md = (write_report(exp.exp_dir).parent / REPORT_MD).read_text()
    items = _answer(md)
    assert items[0].startswith(f"Confirmed best setting: trial {BEST} (")
    assert "mean over 3 sampler seeds of 256 samples" in items[0] and "[0.08, 0.12]" in items[0]
    tied = next(i for i in items if i.startswith("Statistically tied with it"))
    assert f"trial {TIED_ID}" in tied and f"trial {WV2}" in tied and W2019 not in tied
    assert any(i.startswith(f"Versus the 2019 NCSN MNIST setting (Song & Ermon 2019) (trial {W2019}") for i in items)
    versus_2019 = next(i for i in items if "2019 NCSN MNIST" in i)
    assert "worse than the confirmed best at 95%" in versus_2019
    versus_v2 = next(i for i in items if "NCSNv2 recommended" in i)
    assert f"trial {WV2}" in versus_v2 and "not distinguishable at 95% from the confirmed best" in versus_v2
    assert any("FID_inf" in i for i in items)
    # the search's own bullets follow, marked as resting on one evaluation
    first_search = next(k for k, i in enumerate(items) if i.startswith("Search, one evaluation per trial"))
    assert first_search > items.index(versus_v2)
    # the confirmed ranking, best first, beside the per-metric comparison
    section = md.split("## Confirmation: the top trials sampled again", 1)[1]
    order = [section.index(t) for t in (BEST, TIED_ID, WV2, W2019)]
    assert order == sorted(order)
    assert "### Each trial against the confirmed best" in section
    assert f"{WORSE}: 0.1 [0.076, 0.124]" in section  # 2019 against the best on kid


def test_the_closing_summaries_print_the_same_verdicts(tmp_path):
    exp = _confirmed(tmp_path)
    for text in (closing_summary(exp.exp_dir, write_report=False), confirmation_summary(exp.exp_dir, False)):
        assert "confirmed ranking by kid (3 seeds x 256 samples per trial, paired; 95% intervals):" in text
        assert "Statistically tied with it" in text and f"trial {TIED_ID}" in text
        assert "worse than the confirmed best at 95%" in text
        assert "NOT A RESULT" not in text


def test_without_a_confirmation_the_answer_says_it_is_unconfirmed_and_the_leaderboard_has_intervals(tmp_path):
    exp = smoke_like(tmp_path)
    md = (write_report(exp.exp_dir).parent / REPORT_MD).read_text()
    items = _answer(md)
    assert items[0].startswith("Best setting: trial 5d0b1_00002 (") and "95% interval [0.08, 0.12]" in items[0]
    # the answer opens with one sentence and one figure, then the items
    sentence, figure = _answer_parts(md)[:2]
    assert sentence.startswith("Trial 5d0b1_00002 (sigma_begin=3, sigma_end=0.02, step_lr=5e-05) is the best setting")
    assert "kid 0.1 (95% interval [0.08, 0.12]) at 40 iterations" in sentence and sentence.count(". ") == 0
    caption = "the best trial's samples, real digits, and kid against network evaluations"
    assert figure.startswith(f"![answer.png: {caption}]")
    assert (exp.exp_dir / "report" / "answer.png").is_file()
    assert items[-1].startswith("Unconfirmed: each trial's value rests on one evaluation of 64 samples")
    assert f"python platform/confirm.py {exp.exp_dir}" in items[-1]
    board = md.split("## Leaderboard", 1)[1].split("\n## ", 1)[0]
    header = next(line for line in board.splitlines() if line.startswith("| rank"))
    assert "| kid | kid 95% |" in header
    assert "| 0.1 | [0.08, 0.12] |" in board
    assert "Confirmation: the top trials sampled again" not in md


def _view(exp):
    """The experiment as the report sees it: loaded and ranked."""
    loaded = load_experiment(exp.exp_dir)
    return loaded, rank_trials(loaded.trials)


def test_an_interrupted_confirmation_says_how_to_resume(tmp_path):
    exp = _confirmed(tmp_path, summary=False)
    loaded, ranked = _view(exp)
    texts = [b.text for b in sections(loaded, ranked)]
    assert "Not summarised yet (interrupted?): resume with python platform/confirm.py" in texts[-1]
    assert read_confirmation(exp.exp_dir).summary == {}


def _blobs(root, cost_estimate=None):
    """A search whose every evaluation scored like the white blobs of a CPU preview."""
    exp = FakeExperiment(root, "blobs")
    if cost_estimate is not None:
        exp.search["cost_estimate"] = cost_estimate
        exp.search["budget_mode"] = "preview"
        exp.write_search()
    blob = {"class_coverage": 0.12, "recall": 0.0, "fid": 197.0}
    for trial_id, params, kids, end in SMOKE_TRIALS:
        exp.joint_trial(trial_id, params, kids, end, metrics=[blob] * len(kids))
    exp.finish()
    return exp


FULL = {
    "full_budget": {
        "num_trials": 24,
        "max_concurrent": 4,
        "iterations": 30000,
        "eval_samples": 1000,
        "ngf": 64,
        "batch_size": 128,
        "nfe_per_sample": 51,
        "network_evals": 1.1e8,
        "per_trial_s": 9 * 86400.0,
        "search_s": 54 * 86400.0,
        "device": "cpu",
        "gpu": 0.25,
    }
}


def test_a_pipeline_check_says_so_at_the_top_names_no_winner_and_what_a_real_result_needs(tmp_path):
    exp = _blobs(tmp_path, FULL)
    md = (write_report(exp.exp_dir).parent / REPORT_MD).read_text()
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections[0] == "## A pipeline check, not a result"
    warning = md.split("## A pipeline check, not a result\n\n", 1)[1].split("\n\n", 1)[0]
    assert "far from digits: class coverage 0.12 (below 0.5; real digits 1.00)" in warning
    assert "recall 0 (below 0.01; real digits 0.86)" in warning
    assert "24 trials of 30000 iterations at ngf 64, batch 128" in warning
    assert "0.25 of one per trial" in warning and "~9.0 days" in warning
    items = _answer(md)
    assert items[0].startswith("Not a result")
    sentence = _answer_parts(md)[0]
    assert sentence.startswith("No setting draws digits yet (class coverage 0.12), so this search checked the pipeline")
    assert not any(i.startswith("Best setting") for i in items)
    assert any(i.startswith("Best so far (not a result): trial") for i in items)
    text = closing_summary(exp.exp_dir, write_report=False)
    first = next(line for line in text.splitlines() if line.strip())
    assert first.startswith("NOT A RESULT: This is a pipeline check, not a result.")
    assert "24 trials of 30000 iterations" in first


def test_a_confirmed_best_that_samples_digits_lifts_the_check(tmp_path):
    exp = _blobs(tmp_path)
    exp.confirmation([_entry(BEST, [CONFIRM_TOP], 1, 0.1, 0.01, None, metrics={"class_coverage": 0.95, "recall": 0.7})])
    loaded, ranked = _view(exp)
    assert warning_blocks(loaded, ranked) == []
    assert answer_items(loaded, ranked, [])[0].startswith(f"Confirmed best setting: trial {BEST}")


def test_a_check_without_a_recorded_estimate_still_says_what_to_run(tmp_path):
    exp = _blobs(tmp_path)
    text = closing_summary(exp.exp_dir, write_report=False)
    assert "NOT A RESULT" in text and "python platform/run_search.py --space smoke.yaml" in text


def test_a_sampler_search_report_carries_its_confirmation(tmp_path):
    exp = sampler_like(tmp_path)
    exp.confirmation(
        [
            _entry("6e1c2_00004", [CONFIRM_TOP], 1, 0.14, 0.01, None),
            _entry("6e1c2_00001", [CONFIRM_TOP, WARM_TECHNIQUE4], 2, 0.15, 0.02, TIED),
        ]
    )
    md = (write_report(exp.exp_dir).parent / REPORT_MD).read_text()
    items = _answer(md)
    assert items[0].startswith("Confirmed best setting: trial 6e1c2_00004")
    assert any("the NCSNv2 technique-4 sampler (trial 6e1c2_00001" in i and TIED in i for i in items)
    assert "## Confirmation: the top trials sampled again" in md


@pytest.mark.parametrize("name", sorted(FAR_FROM_DIGITS))
def test_each_criterion_of_the_check_fires_alone(name):
    op, limit, label, _ = FAR_FROM_DIGITS[name]
    digits = {"class_coverage": 1.0, "recall": 0.86, "kid": 0.0}
    assert far_from_digits(digits) == []
    bad = {**digits, name: limit * 0.5 if op == "<" else limit * 2}
    reasons = far_from_digits(bad)
    assert len(reasons) == 1 and reasons[0].startswith(label)


def test_the_check_calibration_on_real_mnist():
    """The thresholds against the shipped feature network: real digits and mildly blurred ones
    (0.6 px) pass; heavily blurred ones (1.5 px), a single class and noise are far from digits."""
    import torch

    from trainables.contract.data import load_mnist
    from trainables.scoring import quality
    from trainables.tools import known_answers

    images, labels = load_mnist(train=True)
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(2))[:500]
    real = images[pick].float() / 255.0
    ones = images[labels == 1][:500].float() / 255.0
    cases = {
        "real": real,
        "blurred 0.6": known_answers.gaussian_blur(real, 0.6).clamp(0, 1),
        "blurred 1.5": known_answers.gaussian_blur(real, 1.5).clamp(0, 1),
        "one class": ones,
        "noise": torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(3)),
    }
    flagged = {name: bool(far_from_digits(quality.point_metrics(x))) for name, x in cases.items()}
    assert flagged == {"real": False, "blurred 0.6": False, "blurred 1.5": True, "one class": True, "noise": True}
