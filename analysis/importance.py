"""Parameter importance from the stored Optuna study, with Optuna's own evaluator.

Optuna's default evaluator (fANOVA) and the mean-decrease-impurity one need scikit-learn, which
this project does not install; PED-ANOVA (``optuna.importance.PedAnovaImportanceEvaluator``,
Watanabe et al., IJCAI 2023) needs nothing more and is used here. It measures how much each
parameter's distribution among the top ``target_quantile`` trials differs from its distribution
over all trials: importances are non-negative and sum to 1.

The target is the value the study recorded for each trial: with Ray's OptunaSearch that is the
trial's last reported metric (for a trial ASHA stopped, its value at the stop). Trials that are
not COMPLETE, or whose value is not finite (a diverged trial's inf), are left out.
"""

from __future__ import annotations

import math

import pandas as pd

MIN_TRIALS = 4  # below this the top quantile holds a single trial: no contrast to measure
STABLE_TOP = 5  # PED-ANOVA's authors advise >= 5 trials in the top quantile


def importance_quantile(n_trials: int) -> float:
    """The top quantile: Optuna's default 0.1 once it holds >= 2 trials, else 2 / n (<= 0.5)."""
    return min(0.5, max(0.1, 2.0 / n_trials))


def param_importances(study, params: list[str] | None = None, metric: str = "metric") -> tuple[pd.DataFrame, str]:
    """(frame, note): one row per searched parameter (``param``, ``importance``) sorted most
    important first, and one sentence on how it was computed or why it was not (then the frame
    is empty). ``study`` is an ``optuna.Study`` (or None); ``params`` restricts the parameters;
    ``metric`` only names the study's objective in the note.
    """
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances
    from optuna.trial import TrialState

    empty = pd.DataFrame(columns=["param", "importance"])
    if study is None:
        return empty, "not computed: the experiment folder holds no Optuna study (optuna.db)"
    if len(study.directions) != 1:
        return empty, "not computed: the study has several objectives"
    usable = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    n = len(usable)
    if n < MIN_TRIALS:
        return empty, (
            f"not computed: {n} complete trial(s) with a finite value in the study; "
            f"PED-ANOVA needs at least {MIN_TRIALS} to contrast the best trials with the rest"
        )
    names = [p for p in (params or sorted({k for t in usable for k in t.params})) if any(p in t.params for t in usable)]
    varied = [p for p in names if len({repr(t.params.get(p)) for t in usable}) > 1]
    if not varied:
        return empty, "not computed: no searched parameter took more than one value in the study"
    copy = optuna.create_study(direction=study.direction)
    copy.add_trials(usable)
    q = importance_quantile(n)
    try:
        scores = get_param_importances(copy, evaluator=PedAnovaImportanceEvaluator(target_quantile=q), params=varied)
    except (ValueError, RuntimeError, ZeroDivisionError) as err:
        return empty, f"not computed: Optuna's evaluator failed ({err.__class__.__name__}: {err})"
    frame = pd.DataFrame({"param": list(scores), "importance": [float(v) for v in scores.values()]})
    top = max(1, math.ceil(q * n))
    note = (
        f"PED-ANOVA (Optuna's PedAnovaImportanceEvaluator) on {n} complete trials of study "
        f"'{study.study_name}', top quantile {q:.2f} (about {top} trial(s)); target: each trial's "
        f"value in the study (its last reported {metric})."
    )
    if top < STABLE_TOP:
        note += f" With fewer than {STABLE_TOP} trials in the top quantile, read it as a rough hint."
    fixed = [p for p in names if p not in varied]
    if fixed:
        note += f" Not varied, so not scored: {', '.join(fixed)}."
    return frame.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True), note
