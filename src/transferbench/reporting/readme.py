"""reports/README.md from the summary: pure text, the same summary gives the same page."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from transferbench.config.weights import RANDOM  # every other arm counts as pretrained
from transferbench.reporting.answer import (
    answer_table,
    metric_title,
    per_class_table,
    time_table,
)
from transferbench.reporting.data_size import DATA_SIZE_FIGURE, data_size_lines
from transferbench.reporting.formatting import (
    arm_title,
    fmt_difference,
    fmt_stat,
    fmt_value,
    markdown_table,
)
from transferbench.reporting.reference_studies import METRICS as PUBLISHED_METRICS
from transferbench.reporting.settings import SETTING_TITLES
from transferbench.reporting.stability import (
    CHANCE_DEFINITION,
    DID_NOT_LEARN,
    STABILITY_DEFINITION,
    STILL_IMPROVING,
)
from transferbench.reporting.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
from transferbench.reporting.summary import (
    ArmResult,
    ExperimentSummary,
    OverallRow,
    PublishedFigure,
    Summary,
    Task,
)
from transferbench.reporting.verdict import (
    FAMILY,
    helped,
)

ROWS = (  # (summary key, label, kind); {n}: the CAPTCHA's characters
    ("test_accuracy", "test accuracy", "number"),
    ("test_balanced_accuracy", "test balanced accuracy (mean recall over classes)", "number"),
    ("test_sequence_accuracy", "test accuracy, whole CAPTCHA (all {n} characters right)", "number"),
    ("test_loss", "test loss", "number"),
    ("best_val_accuracy", "best validation accuracy (each run's maximum, mean over seeds)", "number"),
    ("best_epoch", "best validation epoch (the checkpoint tested)", "epochs"),
    ("last_val_accuracy", "validation accuracy, last epoch", "number"),
    ("last_train_accuracy", "train accuracy, last epoch", "number"),
    ("epochs_to_stability", "epochs to stability", "epochs"),
    ("epochs", "epochs trained", "epochs"),
    ("seconds", "training time (wall clock)", "seconds"),
)

KINDS = {key: kind for key, _, kind in ROWS}
FEW_SEEDS = "fewer than 3 seeds: the interval is wide and rough"


def tuning_cell(tuning: Mapping[str, Any], source: str) -> str:
    """e.g. ``grid x0.1, x1, x10 (trials of 2 epochs); chose x1 (validation 0.81, 0.85, 0.60)``."""
    if tuning["kind"] == "none":
        return "none (the reference study's rate)"
    text = "grid " + ", ".join(f"x{f:g}" for f in tuning["factors"])
    if tuning.get("trial_epochs"):
        text += f" (trials of {tuning['trial_epochs']} epochs)"
    if tuning.get("chosen_factor") is not None:
        text += f"; chose x{tuning['chosen_factor']:g}"
    if tuning.get("scores"):
        text += " (validation " + ", ".join(f"{s:.4f}" for s in tuning["scores"]) + ")"
    return text + (" (planned; not in the runs' metrics.json)" if source == "params" else "")


def budget_table(budgets: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Markdown: one row per arm."""
    rows = []
    for arm, b in budgets.items():
        rate = " / ".join(f"{r:g}" for r in b["learning_rate"])
        rows.append([arm_title(arm, b["setting"]), SETTING_TITLES[b["setting"]],
                     rate + (" (recipe; planned)" if b["learning_rate_source"] == "params" else ""),
                     tuning_cell(b["tuning"], b["tuning_source"]),
                     " / ".join(str(e) for e in b["epochs_planned"]),
                     " / ".join(f"{n:,}" for n in b["train_images"]) or "not recorded",
                     ", ".join(map(str, b["seeds"])) or "—"])
    return markdown_table(["arm", "setting", "learning rate trained at", "tuning", "epochs (planned)",
                           "train images", "seeds"], rows)


def verdicts(summary: ExperimentSummary) -> list[str]:
    """Per pretrained arm: the difference and its interval first, then the verdict; other metrics below."""
    lines, outputs = [], summary.task.n_outputs
    for arm, comparison in summary.comparisons.items():
        if "no_result" in comparison:
            continue
        lines.append(f"- {arm_title(arm, comparison['setting'])} − {arm_title(RANDOM)}, "
                     f"{metric_title(comparison['metric'], outputs)}: {fmt_difference(comparison)} points; "
                     f"helped: {helped(comparison)}")
        for metric, other in comparison.get("also", {}).items():
            lines.append(f"  - {metric_title(metric, outputs)}: {fmt_difference(other)} points")
    return lines


def few_seeds(summary: ExperimentSummary) -> list[str]:
    """The arms with 2 seeds, whose t and bootstrap intervals rest on too little."""
    return [a for a in summary.arms if 1 < summary.results[a].n < 3]


def labels_cell(result: ArmResult) -> str:
    """e.g. ``1 still improving, 1 did not learn`` (left out of epochs to stability), or ``none``."""
    labels = list((result.labels or {}).values())
    return ", ".join(f"{labels.count(label)} {label}" for label in (STILL_IMPROVING, DID_NOT_LEARN)
                     if label in labels) or "none"


EXTRA_ROWS: tuple[tuple[str, Callable[[ArmResult], str]], ...] = (
    ("phase of the best epoch", lambda r: ", ".join(r.best_phase or []) or "not recorded"),
    ("curve labels (not in epochs to stability)", labels_cell),
    ("runs", lambda r: f"{r.n} (seeds {', '.join(map(str, r.seeds)) or '—'})"),
)


def result_rows(summary: ExperimentSummary, has_diff: bool) -> list[list[str]]:
    """The per-experiment table's rows: every number per arm (and the difference), then phases and labels."""
    results, arms = summary.results, summary.arms
    diff = summary.difference.get(f"{summary.pretrained_arm} - {RANDOM}", {})
    rows = []
    for key, label, kind in ROWS:
        if not any(key in results[a].stats for a in arms):
            continue
        if key == "test_accuracy" and summary.task.n_outputs > 1:
            label = "test accuracy, per character"
        cells = [fmt_stat(results[a].get(key), kind) for a in arms]
        if has_diff:
            cells.append("—" if diff.get(key) is None else fmt_value(diff[key], kind, signed=True))
        rows.append([label.format(n=summary.task.n_outputs), *cells])
    for label, cell in EXTRA_ROWS:
        rows.append([label, *(cell(results[a]) if results[a].n else "—" for a in arms), *([""] if has_diff else [])])
    return rows


def published_row(figure: PublishedFigure, settings: Mapping[str, str]) -> list[str]:
    """A reference study's figure beside ours: metric, arm, published value(s), our mean ± std, note."""
    kind = KINDS.get(figure.metric, "number")
    return [PUBLISHED_METRICS[figure.metric], arm_title(figure.weights, settings.get(figure.weights)),
            " and ".join(fmt_value(v, kind) for v in figure.values),
            fmt_stat(figure.ours, kind) if figure.ours else "no run", figure.note]


def experiment_section(name: str, summary: ExperimentSummary, figures: Mapping[str, str]) -> list[str]:
    """One experiment's part of the page: the verdicts, its tables, its figures, its missing runs."""
    return [*heading(name, summary), *results_part(summary), "**What each arm was given:**", "",
            *budget_table(summary.budget), "", *data_size_lines(name, summary, figures), *losses(summary),
            *published_part(summary), *details(summary),
            *(line for label, path in figures.items() if label != DATA_SIZE_FIGURE
              for line in (f"![{name}: {label}]({path})", "")),
            *left_out(summary)]


def heading(name: str, summary: ExperimentSummary) -> list[str]:
    lines = [f"## {name}", "", f"Dataset `{summary.dataset}`{captcha_words(summary.task)}, model "
             f"`{summary.model}`; arms {', '.join(f'`{a}`' for a in summary.arms)}; seeds "
             f"{', '.join(map(str, summary.planned_seeds))}.", ""]
    for which, reason in summary.no_result.items():
        lines += [f"**No {which} run:** {reason}.", ""]
    return lines


def results_part(summary: ExperimentSummary) -> list[str]:
    """The verdicts, a note on few seeds, and the table of every number per arm."""
    lines = []
    if verdicts(summary):
        lines += ["**Pretrained minus random** (points; 95% interval resampling each arm's seeds, then the test "
                  "images, paired; Holm-adjusted p over every verdict of this report):", "", *verdicts(summary), ""]
    if few_seeds(summary):
        lines += [f"**Note:** {FEW_SEEDS} ({', '.join(f'`{a}`' for a in few_seeds(summary))}).", ""]
    if any(summary.results[a].n for a in summary.arms):
        has_diff = f"{summary.pretrained_arm} - {RANDOM}" in summary.difference
        header = ["", *(arm_title(a, summary.settings[a]) for a in summary.arms),
                  *([f"difference ({summary.pretrained_arm} − {RANDOM})"] if has_diff else [])]
        lines += [*markdown_table(header, result_rows(summary, has_diff)), ""]
    return lines


def losses(summary: ExperimentSummary) -> list[str]:
    definitions = {a: summary.results[a].loss_definition for a in summary.arms if summary.results[a].loss_definition}
    if not definitions:
        return []
    return ["**Loss**, as each arm's runs define it (losses defined differently do not compare):", "",
            *(f"- {arm_title(a, summary.settings[a])}: {'; '.join(d)}" for a, d in definitions.items()), ""]


def published_part(summary: ExperimentSummary) -> list[str]:
    """The reference study's figures beside ours, or why they are not shown."""
    lines = []
    if summary.published_not_comparable:
        lines += [f"The reference study's figures are not shown: {summary.published_not_comparable}.", ""]
    if summary.published:
        published = summary.published
        lines += [f"Published by {published.source} ({published.recipe}), beside ours for the same metric:", "",
                  *markdown_table(["reference study's figure", "arm", "published", "ours", "note"],
                                  (published_row(f, summary.settings) for f in published.figures)), ""]
    return lines


def details(summary: ExperimentSummary) -> list[str]:
    """Time to accuracy, and accuracy per class (CAPTCHAs: per character position)."""
    lines = []
    if any(summary.time_to_accuracy.values()):
        lines += ["**Time to accuracy**: the first epoch at which an arm's validation accuracy (mean over its "
                  "seeds) reaches the target; seconds are cumulative training time.", "",
                  *time_table(summary.time_to_accuracy, summary.settings), ""]
    if summary.per_class:
        what = "per character position" if summary.per_class.kind == "position" else "per class"
        lines += [f"**Test accuracy {what}** (mean over seeds):", "",
                  *per_class_table(summary.per_class, summary.settings), ""]
    return lines


def left_out(summary: ExperimentSummary) -> list[str]:
    """The experiment's missing runs and the run folders params do not plan."""
    lines = []
    if summary.missing:
        lines += [f"Missing runs ({len(summary.missing)}): " +
                  "; ".join(f"`{m.run}` ({m.reason})" for m in summary.missing) + ".", ""]
    if summary.ignored_run_folders:
        lines += ["Run folders not planned by params.yaml, left out: " +
                  ", ".join(f"`{r}`" for r in summary.ignored_run_folders) + ".", ""]
    return lines


def captcha_length(definitions: Mapping[str, Any]) -> str:
    """The CAPTCHA's characters as params give them, for the README's words ("all 6 characters")."""
    captcha = definitions.get("captcha")
    return str(captcha["length"]) if captcha else "its"


def captcha_words(task: Task) -> str:
    """`` (CAPTCHAs of 6 characters, style `seed000`)`` for a CAPTCHA experiment; empty otherwise."""
    captcha = task.captcha
    return f" (CAPTCHAs of {captcha['length']} characters, style `{captcha['style']}`)" if captcha else ""


def overall_difference(d: Mapping[str, float]) -> str:
    if "test_accuracy" not in d:
        return "—"
    text = fmt_value(d["test_accuracy"], "number", signed=True)
    if "test_sequence_accuracy" in d:
        text += f" per character, {fmt_value(d['test_sequence_accuracy'], 'number', signed=True)} whole"
    return text


def overall_cell(side: Mapping[str, Any], key: str) -> str:
    if key not in side:
        return "no run"
    if key == "test_accuracy" and "test_sequence_accuracy" in side:
        return (f"{fmt_stat(side[key], 'number')} per character, "
                f"{fmt_stat(side['test_sequence_accuracy'], 'number')} whole CAPTCHA")
    return fmt_stat(side[key], KINDS[key])


def headline(summary: ExperimentSummary) -> str:
    """The reference study's first figure per arm, for the overall table."""
    published = summary.published
    if not published:
        return "—"
    first: dict[str, PublishedFigure] = {}  # arm -> its first published figure
    for f in published.figures:
        first.setdefault(f.weights, f)
    return "; ".join(f"{'pretrained' if w != RANDOM else 'random'} {PUBLISHED_METRICS[f.metric]} "
                     f"{' / '.join(fmt_value(v, 'number') for v in f.values)}"
                     for w, f in first.items()) + f" ({published.source})"


OVERALL_HEADER = ["experiment", "dataset, model", "test accuracy: pretrained", "random", "difference",
                  "test loss: pretrained / random", "epochs to stability: pretrained / random",
                  "training time: pretrained / random", "runs", "reference study's figure"]


def overall_table(rows: list[OverallRow], summaries: Mapping[str, ExperimentSummary]) -> list[str]:
    def both(row: OverallRow, key: str) -> str:
        return f"{overall_cell(row.pretrained, key)} / {overall_cell(row.random, key)}"

    return markdown_table(OVERALL_HEADER, [
        [f"[{row.experiment}](#{row.experiment.lower()})", f"{row.dataset}, {row.model}",
         overall_cell(row.pretrained, "test_accuracy"), overall_cell(row.random, "test_accuracy"),
         overall_difference(row.difference), both(row, "test_loss"), both(row, "epochs_to_stability"),
         both(row, "seconds"), f"{row.pretrained.get('n', 0)} / {row.random.get('n', 0)}",
         headline(summaries[row.experiment])] for row in rows])


INTRO = (
    "Written by `python -m stages.report` (DVC stage `report`) from every run under "
    "`reports/runs/<experiment>/`; do not edit by hand. The same numbers are in `summary.json`; "
    "`dvc plots show` draws `curves.csv` and `data_size.csv`; `mlflow ui` in the repository root shows "
    "every run. The reference studies are the five published studies this project redoes, whose figures sit "
    "beside ours: 000 (Xception on Open Images cats, dogs and birds and on CAPTCHAs, pretrained and from "
    "scratch), 001 (fine-tuning strategies), 002 (a small CNN from scratch on cats_and_dogs_filtered), 003 (a "
    "frozen ImageNet VGG16 on Kaggle's dogs-vs-cats) and 004 (GoogLeNet from scratch on CIFAR-10)."
)
ANSWER_NOTE = (
    "Each pretrained arm is one setting (Kornblith, Shlens & Le 2019): *fine-tuned* trains the pretrained "
    "base with its head, *fixed features* freezes the base under a linear or SVM head; *random init* trains "
    "the same model from random weights. Each verdict names its test metric: balanced accuracy (mean recall "
    "over the test set's classes) for an experiment trained with balanced class weights, else accuracy "
    "(per character for CAPTCHAs). Arm columns are the mean over training seeds with a 95% t interval "
    f"(one seed: no interval; {FEW_SEEDS}). The difference comes first, in percentage points, with a 95% "
    f"interval from {BOOTSTRAP_RESAMPLES:,} resamples (fixed random state {BOOTSTRAP_SEED}) that each draw "
    "every arm's seeds with replacement, average their per-image correctness, then draw the test images "
    "with replacement, the same for both arms: it counts training chance and the test set's sampling. "
    "Pretraining *helped* (yes) when the Holm-adjusted p-value is below 0.05 and the interval lies above 0; "
    f"the Holm family is {FAMILY}. With one seed in an arm there is no verdict, only the interval over test "
    "images, labelled so. The reference studies' figures are each labelled with the metric they measured."
)


def how_to_read(characters: str) -> str:
    """The overall table's key; ``characters``: the CAPTCHA's length, as params give it."""
    return (
        "**How to read it.** Numbers are the mean over training seeds and its 95% t interval in brackets "
        "(none with one seed); *difference* is the pretrained mean minus the random-initialisation mean. "
        "*Test accuracy* is on the held-out test split; for CAPTCHAs it is per character (the figure "
        f"reference study 000 most likely published), and the experiment's table adds whole-CAPTCHA "
        f"accuracy (all {characters} characters right). *Test loss* is Keras' total loss (for CAPTCHAs the sum "
        f"over the {characters} heads). *Best validation accuracy* is each run's maximum over its epochs (the "
        "checkpoint that is tested), averaged over seeds, everywhere in this report. "
        f"*Epochs to stability* is {STABILITY_DEFINITION} "
        "(`transferbench.reporting.report.epochs_to_stability`), per run, then "
        "averaged over the seeds whose runs stabilised; a run whose last epoch is still further below its best "
        f"is *not stable* and counted beside the mean, not in it; so is every run labelled: {CHANCE_DEFINITION}. "
        "Intervals are clipped to their valid range ([0, 1] for accuracies, 0 or more for losses, epochs and "
        "seconds). The tolerance is absolute: well above the "
        "epoch-to-epoch sampling noise of "
        "the validation sets (binomial standard error about 0.004 at 95% accuracy on pets' 2,835 images) "
        "and below the gap reference study 000 reports between its arms (0.023). That study's 8 and 17 epochs "
        "were read off its curves by eye, so they compare only roughly. *Training time* is the training stage's "
        "wall clock (hardware dependent). The reference studies' figures are not all the same metric: each is "
        "labelled."
    )


def readme(summary: Summary) -> str:
    """reports/README.md from the summary (pure: the same summary gives the same text)."""
    lines = ["# Results: how much do ImageNet-pretrained weights help?", "", INTRO, "", "## The answer", "",
             *answer_table(summary.experiments), "",
             *([summary.definitions["budget_rule"], ""] if "budget_rule" in summary.definitions else []),
             ANSWER_NOTE, "", "## Overall", "", *overall_table(summary.overall, summary.experiments), "",
             how_to_read(captcha_length(summary.definitions)), ""]
    if summary.missing:
        lines += [f"**Missing runs ({len(summary.missing)})**, planned by params.yaml but not found; they are left out "
                  "of every number above:", "",
                  *markdown_table(["experiment", "run", "reason"],
                                  ([m.experiment, f"`{m.run}`", m.reason] for m in summary.missing)), ""]
    for name, experiment in summary.experiments.items():
        lines += experiment_section(name, experiment, summary.figures.get(name, {}))
    return "\n".join(lines).rstrip("\n") + "\n"
