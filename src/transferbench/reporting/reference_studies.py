"""What the reference studies published, as data: the figures the report puts beside ours.

The reference studies are the five published studies this project redoes, numbered 000-004: 000 trained
Xception pretrained and from scratch on Open Images cats, dogs and birds and on generated CAPTCHAs, 001
compared fine-tuning strategies (no figures), 002 trained a small CNN from scratch on cats_and_dogs_filtered,
003 a frozen ImageNet VGG16 on Kaggle's dogs-vs-cats and 004 GoogLeNet from scratch on CIFAR-10. They measured
different things: test accuracy and epochs until validation accuracy looked stable (000, the epochs read off
its curves by eye), validation accuracy at the last epoch (002, 003, 004) and train accuracy (002 too).
Each figure says which, so the report compares like with like.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One published number (or several runs' numbers) for one arm of one experiment."""

    weights: str  # the arm it belongs to: "imagenet" (pretrained) or "none" (random initialisation)
    metric: str  # "test_accuracy", "test_loss", "last_val_accuracy", "last_train_accuracy", "epochs_to_stability"
    values: tuple[float, ...]  # one per published run
    note: str = ""


@dataclass(frozen=True)
class Published:
    """A reference study's experiment: where it comes from, its recipe, its figures."""

    source: str
    dataset: str  # what the study trained on and with: a params override of either makes another experiment
    model: str
    recipe: str
    figures: tuple[Figure, ...]

    def differs(self, dataset: str, model: str) -> str | None:
        """Why this study's figures do not describe an experiment on ``dataset`` with ``model`` (None: they do)."""
        if (dataset, model) == (self.dataset, self.model):
            return None
        return f"{self.source} trained {self.model} on {self.dataset}, this run {model} on {dataset}"


# What each metric name means, in the words the report prints.
METRICS = {
    "test_accuracy": "test accuracy",
    "test_loss": "test loss",
    "last_val_accuracy": "validation accuracy, last epoch",
    "last_train_accuracy": "train accuracy, last epoch",
    "epochs_to_stability": "epochs to stability",
}

# Keyed by experiment (params.yaml's experiments), not dataset: one dataset can hold several experiments
# (cats_and_dogs_filtered: reference study 002's small CNN, and an Xception two-phase recipe no
# reference study published).
PUBLISHED: dict[str, Published] = {
    "pets": Published(
        source="reference study 000",
        dataset="pets",
        model="xception",
        recipe="Xception (max pooling, Dense 3 softmax), Adam, 30 epochs, 100x100, Open Images cat/dog/bird",
        figures=(
            Figure("imagenet", "test_accuracy", (0.9596,)),
            Figure("imagenet", "test_loss", (0.1184,)),
            Figure("none", "test_accuracy", (0.9366,)),
            Figure("none", "test_loss", (0.2408,)),
            Figure("imagenet", "epochs_to_stability", (8,), "read off the validation curve by eye"),
            Figure("none", "epochs_to_stability", (17,), "read off the validation curve by eye"),
        ),
    ),
    "captcha": Published(
        source="reference study 000",
        dataset="captcha",
        model="xception",
        recipe="Xception (max pooling, six Dense 36 softmax heads), Adam, 30 epochs, 160x80, 200,000 CAPTCHAs",
        figures=(
            Figure("imagenet", "test_accuracy", (0.9982,), "most likely per character, not whole CAPTCHA"),
            Figure("imagenet", "test_loss", (0.0479,), "Keras' total over the six heads"),
            Figure("none", "test_accuracy", (0.9496,), "most likely per character, not whole CAPTCHA"),
            Figure("none", "test_loss", (0.4323,), "Keras' total over the six heads"),
        ),
    ),
    "cats_and_dogs_filtered_cnn": Published(
        source="reference study 002",
        dataset="cats_and_dogs_filtered",
        model="cnn",
        recipe="small CNN from scratch (conv 16/32/64 + max-pool, Dense, sigmoid), RMSprop, 15 epochs, 150x150",
        figures=(
            Figure("none", "last_val_accuracy", (0.712, 0.725), "two runs; the model overfits"),
            Figure("none", "last_train_accuracy", (0.99,)),
        ),
    ),
    "dogs_vs_cats": Published(
        source="reference study 003",
        dataset="dogs_vs_cats",
        model="vgg16",
        recipe="VGG16 ImageNet base (block5_pool, first 18 layers frozen), Dense 256, Dropout 0.6, sigmoid, 50 epochs",
        figures=(
            Figure("imagenet", "last_val_accuracy", (0.969,), "frozen convolutional base"),
        ),
    ),
    "cifar10": Published(
        source="reference study 004",
        dataset="cifar10",
        model="googlenet",
        recipe="GoogLeNet / Inception v1 from scratch, two auxiliary heads, SGD momentum 0.9, 25 epochs, 224x224",
        figures=(
            Figure("none", "last_val_accuracy", (0.819,), "main head; the study validated on CIFAR-10's test set"),
        ),
    ),
}
