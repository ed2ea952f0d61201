"""The numbers: per experiment and arm, every number over seeds, pretrained against random initialisation,
the answer across data sizes and the reference studies' figures beside ours; and the overall rows
(reporting.summary's types; the statistics are stats' and verdict's)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from transferbench.config.weights import RANDOM  # every other arm counts as pretrained
from transferbench.core.errors import ConfigError
from transferbench.models.catalog import MODELS
from transferbench.reporting.budget import arm_budget, budget_rule, distinct
from transferbench.reporting.read import (
    ExperimentRuns,
    Run,
)
from transferbench.reporting.reference_studies import METRICS as PUBLISHED_METRICS
from transferbench.reporting.reference_studies import PUBLISHED
from transferbench.reporting.settings import FINE_TUNED
from transferbench.reporting.stability import (
    CHANCE_DEFINITION,
    CHANCE_MARGIN,
    DID_NOT_LEARN,
    STABILITY_DEFINITION,
    STABILITY_TOLERANCE,
    STILL_IMPROVING,
)
from transferbench.reporting.stats import first_reaching, mean_interval
from transferbench.reporting.summary import (
    ArmResult,
    Comparison,
    ExperimentSummary,
    OverallRow,
    PerClass,
    Published,
    PublishedFigure,
    Share,
    ShareArm,
    Task,
)
from transferbench.reporting.verdict import (
    ALPHA,
    FAMILY,
    RESULT_KEYS,
    compare,
    interval_metrics,
)
from transferbench.study.params import Params

# Published figures a validation curve can be held against (the reference studies' test figures were measured
# on held-out data of the same distribution; their train figures and losses are not comparable).
COMPARABLE_METRICS = ("test_accuracy", "last_val_accuracy")


def time_to_accuracy(curves: Mapping[str, pd.DataFrame], published: Sequence[Mapping[str, Any]],
                     source: str | None, best: Mapping[str, float]) -> dict[str, list[dict]]:
    """Per arm, the first epoch (and seconds) its mean validation curve reaches each target: every comparable
    published figure of the reference study, and every other arm's best validation accuracy; None = not reached.

    ``curves``: arm -> mean over seeds (epoch, val_accuracy, and seconds when every run recorded it).
    ``best``: arm -> its runs' best validation accuracy (each run's maximum), averaged over seeds.
    """
    targets = [(f"{source}'s {figure['weights']} {PUBLISHED_METRICS[figure['metric']]}",
                float(np.mean(figure["values"])))
               for figure in published if figure["metric"] in COMPARABLE_METRICS]
    out: dict[str, list[dict]] = {}
    for arm, curve in curves.items():
        rows = list(targets) + [(f"best validation accuracy of {other}", float(best[other]))
                                for other in curves if other != arm and other in best]
        seconds = curve["seconds"].tolist() if "seconds" in curve else None
        out[arm] = [{"target": label, "accuracy": value,
                     "reached": first_reaching(curve["epoch"].tolist(), curve["val_accuracy"].tolist(), value,
                                               seconds)}
                    for label, value in rows]
    return out


def pretrained_arm(settings: Mapping[str, str]) -> str | None:
    """The arm the overall table sets against random initialisation: the experiment's own recipe from ImageNet
    (``imagenet``, whatever its setting) if planned, else the first fine-tuned arm, else the first pretrained one."""
    others = [a for a in settings if a != RANDOM]
    tuned = [a for a in others if settings[a] == FINE_TUNED]
    if "imagenet" in others:
        return "imagenet"
    return (tuned or others)[0] if others else None


def missing_arm_reason(experiment: ExperimentRuns, which: str) -> str | None:
    """Why the experiment has no pretrained (or no random) result; None when it has one."""
    if which == "pretrained":
        arm = pretrained_arm(experiment.settings)
    else:
        arm = RANDOM if RANDOM in experiment.arms else None
    if arm is None:
        if which == "random":
            return "params.yaml trains only pretrained weights for this experiment (weights: none is not listed)"
        why = "" if has_imagenet(experiment.model) else f" ({experiment.model} has no ImageNet weights in Keras)"
        return f"params.yaml trains {experiment.model} from random initialisation only{why}"
    if not experiment.by_arm(arm):
        return f"every {arm} run is missing (listed below)"
    return None


def has_imagenet(model: str) -> bool:
    try:
        return MODELS.get(model).imagenet is not None
    except ConfigError:
        return False


def stability_stat(arm_runs: Sequence[Run]) -> dict:
    """Epochs to stability over the runs that stabilised, and how many did not, are still improving or did
    not learn (their mean would be a guess)."""
    counted = [r for r in arm_runs if r.label is None]
    stable = [float(r.stability) for r in counted if r.stability is not None]
    stat = mean_interval(stable, BOUNDS["epochs_to_stability"]) if stable else {
        "mean": None, "std": None, "n": 0, "low": None, "high": None}
    return {**stat, "not_stable": len(counted) - len(stable),
            "still_improving": sum(r.label == STILL_IMPROVING for r in arm_runs),
            "did_not_learn": sum(r.label == DID_NOT_LEARN for r in arm_runs)}


ACCURACY, POSITIVE = (0.0, 1.0), (0.0, None)


# Each number's valid range: its interval is clipped to it.
BOUNDS: dict[str, tuple[float | None, float | None]] = {
    **dict.fromkeys(("test_accuracy", "test_balanced_accuracy", "test_sequence_accuracy", "best_val_accuracy",
                     "last_val_accuracy", "last_train_accuracy"), ACCURACY),
    **dict.fromkeys(("test_loss", "best_epoch", "epochs_to_stability", "epochs", "seconds"), POSITIVE),
}


def arm_results(experiment: ExperimentRuns, arm: str, fraction: float | None = None) -> ArmResult:
    """Mean and interval over seeds of every per-run number of one arm (at one share, default the main)."""
    arm_runs = experiment.by_arm(arm, fraction)
    result = ArmResult(runs=[r.name for r in arm_runs], n=len(arm_runs), seeds=[r.seed for r in arm_runs],
                       setting=experiment.setting(arm),
                       loss_definition=sorted({str(r.metrics["loss_definition"]) for r in arm_runs
                                               if "loss_definition" in r.metrics}))
    if arm_runs:
        per_run = [r.values() for r in arm_runs]
        for key in dict.fromkeys(k for v in per_run for k in v):
            result.stats[key] = mean_interval([v[key] for v in per_run if key in v], BOUNDS.get(key, (None, None)))
        result.stats["epochs_to_stability"] = stability_stat(arm_runs)
        result.best_phase = sorted({str(r.metrics["best_phase"]) for r in arm_runs if "best_phase" in r.metrics})
        result.labels = {r.name: r.label for r in arm_runs if r.label}
    return result


def differences(results: Mapping[str, ArmResult]) -> dict[str, dict[str, float]]:
    """Per pretrained arm with runs, its mean minus random initialisation's, for every number both have."""
    random = results.get(RANDOM)
    if random is None or not random.n:
        return {}
    return {f"{arm} - {RANDOM}": {key: stat["mean"] - random.stats[key]["mean"]
                                  for key, stat in result.stats.items() if key in random.stats
                                  and stat.get("mean") is not None and random.stats[key].get("mean") is not None}
            for arm, result in results.items() if arm != RANDOM and result.n}


def published_beside(experiment: ExperimentRuns, results: Mapping[str, ArmResult]) -> tuple[Published | None,
                                                                                             str | None]:
    """The reference study's figures with ours beside them; or why they do not describe this experiment."""
    published = PUBLISHED.get(experiment.name)
    if published is None:
        return None, None
    # A params override (`-S experiments.captcha.model=cnn`) keeps the name but not the reference study's recipe.
    not_comparable = published.differs(experiment.dataset, experiment.model)
    if not_comparable:
        return None, not_comparable
    figures = [PublishedFigure(f.weights, f.metric, list(f.values), f.note,
                               results[f.weights].get(f.metric) if f.weights in results else None)
               for f in published.figures]
    return Published(published.source, published.recipe, figures), None


def summarise(experiment: ExperimentRuns) -> ExperimentSummary:
    """Per arm: mean/std/n of every number; pretrained minus random; missing runs; the reference study's figures."""
    results = {arm: arm_results(experiment, arm) for arm in experiment.arms}
    comparisons = {arm: comparison(experiment, arm) for arm in experiment.arms if arm != RANDOM}
    published, not_comparable = published_beside(experiment, results)
    return ExperimentSummary(
        dataset=experiment.dataset, model=experiment.model, arms=experiment.arms, settings=experiment.settings,
        planned_seeds=experiment.seeds, train_fractions=experiment.fractions,
        main_fraction=experiment.main_fraction, task=task(experiment), verdict_metric=experiment.verdict_metric,
        pretrained_arm=pretrained_arm(experiment.settings), results=results, difference=differences(results),
        no_result={which: reason for which in ("pretrained", "random")
                   if (reason := missing_arm_reason(experiment, which))},
        missing=experiment.missing, ignored_run_folders=experiment.ignored,
        published_not_comparable=not_comparable, published=published, comparisons=comparisons,
        time_to_accuracy=arm_times(experiment, results, published), per_class=per_class(experiment),
        budget={arm: arm_budget(experiment.plan[arm], [r.metrics for r in experiment.by_arm(arm)],
                                [r.seed for r in experiment.by_arm(arm)]) for arm in experiment.arms},
        data_size=data_size_rows(experiment, comparisons))


def task(experiment: ExperimentRuns) -> Task:
    return Task(n_classes=experiment.n_classes, n_outputs=experiment.n_outputs, chance=experiment.chance,
                chance_margin=experiment.margin, validation_images=experiment.validation_images,
                class_weight=experiment.class_weight, captcha=experiment.captcha)


def arm_times(experiment: ExperimentRuns, results: Mapping[str, ArmResult],
              published: Published | None) -> dict[str, list[dict]]:
    """Time to accuracy per arm with runs: its mean validation curve against every target."""
    figures = [{"weights": f.weights, "metric": f.metric, "values": f.values} for f in published.figures] \
        if published else []
    return time_to_accuracy(
        {arm: mean_curve(experiment.by_arm(arm)) for arm in experiment.arms if experiment.by_arm(arm)},
        figures, published.source if published else None,
        {arm: results[arm].stats["best_val_accuracy"]["mean"] for arm in experiment.arms if results[arm].n})


def comparison(experiment: ExperimentRuns, arm: str, fraction: float | None = None,
               also: bool = True) -> Comparison:
    """``arm`` against random initialisation on the verdict metric (points), with a paired interval over
    seeds and test images; with ``also``, the other metrics' intervals under ``also``."""
    mine, random = experiment.by_arm(arm, fraction), experiment.by_arm(RANDOM, fraction)
    out: dict[str, Any] = {"setting": experiment.setting(arm), "against": RANDOM}
    if not mine or not random:
        absent = arm if not mine else RANDOM
        why = "not planned in params.yaml" if absent not in experiment.arms else "every run is missing"
        return {**out, "metric": experiment.verdict_metric, "no_result": f"no {absent} run ({why})"}
    both = [*mine, *random]
    lacking = [r.name for r in both if r.predictions is None]
    metrics = interval_metrics(experiment.verdict_metric, experiment.n_outputs)[:None if also else 1]
    means = {m: (arm_mean(mine, m), arm_mean(random, m)) for m in metrics}
    target = None if lacking else both[0].predictions[0]  # type: ignore[index]
    result = compare(target, [r.predictions[1] for r in mine if r.predictions is not None],
                     [r.predictions[1] for r in random if r.predictions is not None], metrics, means)
    return {**out, **result, **({"no_predictions": lacking} if lacking else {})}


def arm_mean(arm_runs: Sequence[Run], metric: str) -> float:
    """The runs' mean test ``metric`` (nan where a run does not have it)."""
    values = [r.values().get(RESULT_KEYS[metric], math.nan) for r in arm_runs]
    return float(np.mean(values))


def data_size_rows(experiment: ExperimentRuns, main: dict[str, Comparison]) -> list[Share]:
    """Per share of the training split: each arm's verdict metric over seeds, and each pretrained arm minus
    random with its two-level interval (descriptive: no verdict, not in the Holm family); ``main``: the
    main share's comparisons, already made."""
    key = RESULT_KEYS[experiment.verdict_metric]
    rows = []
    for fraction in experiment.fractions:
        arms = {}
        for arm in experiment.arms:
            result = arm_results(experiment, arm, fraction)
            images = distinct(r.metrics.get("train_images") for r in experiment.by_arm(arm, fraction))
            arms[arm] = ShareArm(n=result.n, metric=result.get(key), train_images=images, setting=result.setting)
        versus = main if fraction == experiment.main_fraction else {
            arm: comparison(experiment, arm, fraction, also=False) for arm in experiment.arms if arm != RANDOM}
        rows.append(Share(train_fraction=fraction, arms=arms, comparisons=versus))
    return rows


def mean_curve(arm_runs: Sequence[Run]) -> pd.DataFrame:
    """Validation accuracy per epoch averaged over the runs (and cumulative seconds, when every run has them)."""
    columns = ["epoch", "val_accuracy"] + (["seconds"] if all("seconds" in r.history for r in arm_runs) else [])
    joined = pd.concat([r.history[columns] for r in arm_runs], ignore_index=True)
    return joined.groupby("epoch", as_index=False).mean().sort_values("epoch")


def per_class(experiment: ExperimentRuns) -> PerClass | None:
    """Per arm, each class's (CAPTCHA: each position's) test accuracy averaged over seeds; None if none known."""
    arms: dict[str, dict[str, float]] = {}
    kind = "class"
    for arm in experiment.arms:
        tables = []
        for run in experiment.by_arm(arm):
            test = run.metrics["test"]
            if "position_accuracy" in test:
                kind = "position"
                tables.append(test["position_accuracy"])
            elif "per_class_accuracy" in run.metrics:
                tables.append(run.metrics["per_class_accuracy"])
            elif run.confusion is not None:  # runs evaluated before per-class accuracy was kept
                counts = run.confusion.to_numpy(dtype=float)
                tables.append(dict(zip(run.confusion.index, np.diag(counts) / np.maximum(counts.sum(axis=1), 1),
                                       strict=True)))
        if tables:
            names = list(dict.fromkeys(k for t in tables for k in t))
            arms[arm] = {k: float(np.mean([t[k] for t in tables if k in t])) for k in names}
    return PerClass(kind, arms) if arms else None


OVERALL_KEYS = ("test_accuracy", "test_sequence_accuracy", "test_loss", "epochs_to_stability", "seconds")


def overall_rows(summaries: Mapping[str, ExperimentSummary]) -> list[OverallRow]:
    """One row per experiment: pretrained and random test accuracy, loss, stability, and the differences."""
    rows = []
    for name, s in summaries.items():
        pretrained = s.pretrained_arm
        sides: dict[str, dict[str, Any]] = {}
        for which, arm in (("pretrained", pretrained), ("random", RANDOM)):
            result = s.results.get(arm) if arm else None
            if result and result.n:
                sides[which] = {**{key: result.stats[key] for key in OVERALL_KEYS if key in result.stats},
                                "n": result.n}
            else:
                sides[which] = {"n": 0, "no_result": s.no_result.get(which, "no run")}
        difference = {k: v for k, v in s.difference.get(f"{pretrained} - {RANDOM}", {}).items() if k in OVERALL_KEYS}
        rows.append(OverallRow(name, s.dataset, s.model, pretrained, sides["pretrained"], sides["random"], difference))
    return rows


def definitions(params: Params, family: int) -> dict:
    """What the report's words mean, for summary.json and the README."""
    captcha = getattr(params, "captcha", None)
    return {
        "epochs_to_stability": STABILITY_DEFINITION,
        "stability_tolerance": STABILITY_TOLERANCE,
        "curve_labels": CHANCE_DEFINITION,
        "chance_margin": {"floor": CHANCE_MARGIN[0], "standard_errors": CHANCE_MARGIN[1]},
        "std": "sample standard deviation over seeds (n - 1); null for one seed",
        "difference": "pretrained arm's mean minus random initialisation's (none) mean",
        "interval": "95% percentile interval of a bootstrap resampling each arm's seeds, then the test images "
                    "(paired)",
        "best_val_accuracy": "each run's maximum validation accuracy, averaged over seeds",
        "holm_family": FAMILY,
        "holm_family_size": family,
        "alpha": ALPHA,
        "tuning": params.tuning.model_dump(),
        "random_schedule": params.random_schedule,
        "budget_rule": budget_rule(params.tuning.model_dump(), params.random_schedule),
        "captcha": None if captcha is None else {"length": captcha.length, "style": getattr(captcha, "style", "plain")},
    }
