"""End to end: `dvc repro` of the whole pipeline with tiny params, every source served on loopback.

First every data stage of every photo dataset: Open Images from moto's S3 and an HTTP server for its
label CSVs, Google's zip and CIFAR-10's tarball from an HTTP server, Kaggle through the real client
talking to a fake API, pointed at these mirrors by params and environment as an air-gapped site
would. Then everything else: every experiment trained from a "pretrained" weights file the test
saves (Keras' ImageNet files are out of reach) and from random initialisation, evaluated, reported.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import yaml

from tests import repo_copy
from tests.fake_sources import (
    KAGGLE_KEY,
    KAGGLE_SECRETS,
    KAGGLE_USER,
    MIDS,
    FakeKaggle,
    cifar_tar,
    filtered_zip,
    kaggle_bundle,
    open_images,
)
from tests.loopback import LoopbackServer
from transferbench.data.sources import kaggle_dogs_vs_cats, openimages

pytestmark = pytest.mark.slow

PHOTOS = ("pets", "dogs_vs_cats", "cats_and_dogs_filtered", "cifar10")
# Two images per class and split, one image with two labels (left out), one label without an object.
PETS_LABELS = {
    split: [(f"{split[0]}{name}{i}", mid, 1) for name, mid in MIDS.items() for i in range(2)]
    + [(f"{split[0]}catdog", MIDS["cat"], 1), (f"{split[0]}catdog", MIDS["dog"], 1)]
    for split in ("train", "validation", "test")
}
PETS_LABELS["train"].append(("tmissing", MIDS["dog"], 1))
# The "pretrained" arm of each model with ImageNet weights: a file of its base, saved by the test.
PRETRAINED = {"xception": "xception.weights.h5", "vgg16": "vgg16.weights.h5"}
MIRROR_LOGIN = ("reader", f"pw{uuid.uuid4().hex}")  # made here: the copy's own files must not hold it


def save_pretrained(repo) -> None:
    from transferbench.models.backbones import build_core

    for model, name in PRETRAINED.items():
        build_core(model, (80, 80, 3)).save_weights(repo / name)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A tiny copy of the repository whose photo sources are all on loopback; yields (repo, env)."""
    tmp = tmp_path_factory.mktemp("data_pipeline")
    cifar, _, _ = cifar_tar(per_batch=10)
    with open_images(PETS_LABELS, {"tmissing"}, ("open-images-dataset",), tmp / "csv", openimages.csv_name) as oi, \
            LoopbackServer() as web, FakeKaggle(kaggle_bundle(cats=6, dogs=6)) as kaggle:
        endpoint, csv_base, _ = oi
        web.files["/mledu-datasets/cats_and_dogs_filtered.zip"] = filtered_zip(
            {("train", "cats"): 3, ("train", "dogs"): 3, ("validation", "cats"): 2, ("validation", "dogs"): 2})
        web.files["/cifar-10-python.tar.gz"] = cifar
        # A mirror that wants a login: it comes from the netrc file, as params.yaml may not hold it.
        web.logins["/cifar-10-python.tar.gz"] = MIRROR_LOGIN
        (tmp / "netrc").write_text(f"machine 127.0.0.1 login {MIRROR_LOGIN[0]} password {MIRROR_LOGIN[1]}\n")

        def tiny(params: dict) -> None:
            for name in PHOTOS:
                params[name].update(height=32, width=32, workers=2)
            params["pets"]["source"].update(csv_base=csv_base, s3_endpoint=endpoint, download_workers=4)
            params["dogs_vs_cats"].update(train=4, validation=2, test=2)
            params["cats_and_dogs_filtered"].update(validation=2, test=2)
            params["cats_and_dogs_filtered"]["source"]["urls"] = [
                "http://127.0.0.1:9/unreachable/cats_and_dogs_filtered.zip",  # an old address, now dead
                web.url("/mledu-datasets/cats_and_dogs_filtered.zip")]
            params["cifar10"].update(validation=10)
            params["cifar10"]["source"].update(urls=[web.url("/cifar-10-python.tar.gz")], sha256=None)
            for name in ("pets", "cats_and_dogs_filtered"):  # Xception's minimum input
                params[name].update(height=71, width=71)
            params["captcha"].update(train=24, validation=12, test=12, workers=2)
            for values in params["experiments"].values():
                values.update(epochs=1, batch_size=4)  # the smallest training split (dogs_vs_cats) has 4
                if values["strategy"] == "two_phase":
                    values.update(epochs=2, head_epochs=1)
                if values["model"] in PRETRAINED:
                    values["weights"] = [PRETRAINED[values["model"]], "none"]

        repo, env = repo_copy.copy_repository(tmp / "repo", tiny, before_commit=save_pretrained)
        env.update(NETRC=str(tmp / "netrc"), KAGGLE_USERNAME=KAGGLE_USER, KAGGLE_KEY=KAGGLE_KEY,
                   KAGGLE_CONFIG_DIR=str(tmp / "kaggle"), **{kaggle_dogs_vs_cats.ENDPOINT_ENV: kaggle.base})
        yield repo, env


def test_every_photo_dataset_is_fetched_prepared_and_validated_by_dvc(pipeline):
    repo, env = pipeline
    targets = [f"validate@{name}" for name in PHOTOS]
    out = repo_copy.dvc(repo, env, "repro", *targets)
    for name in PHOTOS:
        for stage in ("fetch", "prepare", "validate"):
            assert f"'{stage}@{name}'" in out, f"{stage}@{name} did not run:\n{out[-3000:]}"

    expected = {  # images per split after preparation
        "pets": {"train": 6, "validation": 6, "test": 6},
        "dogs_vs_cats": {"train": 4, "validation": 2, "test": 2},
        "cats_and_dogs_filtered": {"train": 6, "validation": 2, "test": 2},
        "cifar10": {"train": 40, "validation": 10, "test": 10},
    }
    for name, counts in expected.items():
        meta = json.loads((repo / f"data/prepared/{name}/meta.json").read_text())
        assert meta["splits"] == counts, name
        summary = json.loads((repo / f"reports/{name}/validation/summary.json").read_text())
        assert summary["success"], name
        assert set(summary["class_balance"]["test"]) == set(meta["classes"])
        assert (repo / f"reports/{name}/fetch.json").is_file() and (repo / f"reports/{name}/prepare.json").is_file()

    # Images with two of the labels are left out and counted; a labelled image missing from the bucket
    # is recorded as failed, not silently skipped.
    manifest = (repo / "data/raw/pets/manifest.csv").read_text()
    assert manifest.count("multiple labels: cat+dog") == 3
    assert [line.split(",")[5] for line in manifest.splitlines() if "tmissing" in line] == ["failed"]
    for secret in KAGGLE_SECRETS:  # Kaggle's key is in the environment, never in what the stages wrote
        for path in list((repo / "reports").rglob("*")) + list((repo / "data/raw/dogs_vs_cats").glob("*.csv")):
            if path.is_file():
                assert secret not in path.read_text(errors="replace"), path
    # The mirror's login came from the netrc file: neither it nor any userinfo is in dvc.lock or git.
    lock = (repo / "dvc.lock").read_text()
    assert "cifar-10-python.tar.gz" in lock and "@127.0.0.1" not in lock
    history = subprocess.run(["git", "log", "-p", "--all"], cwd=repo, capture_output=True, text=True).stdout
    assert MIRROR_LOGIN[1] not in lock + history and not any(secret in lock for secret in KAGGLE_SECRETS)
    assert MIRROR_LOGIN[1] not in (repo / "data/raw/cifar10/cifar-10-python.tar.gz.source.json").read_text()

    # Nothing changed: nothing to do, and no source is asked again.
    assert "up to date" in repo_copy.dvc(repo, env, "repro", *targets).lower()


def test_every_experiment_trains_both_arms_and_the_report_compares_them(pipeline):
    repo, env = pipeline
    out = repo_copy.dvc(repo, env, "repro")
    assert "'report'" in out, out[-3000:]
    summary = json.loads((repo / "reports/summary.json").read_text())
    assert summary["missing"] == []
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for name, values in params["experiments"].items():
        arms = json.loads((repo / f"reports/{name}/metrics.json").read_text())[name]
        expected = ["none"]
        if values["model"] in PRETRAINED:  # three settings: fine-tuned, fixed features (a frozen recipe: tuned), random
            source = "file-" + PRETRAINED[values["model"]]
            expected += [source, source + ("-tuned" if values["strategy"] == "frozen" else "-fixed")]
        assert sorted(arms) == sorted(expected), name
        comparisons = summary["experiments"][name]["comparisons"]
        assert sorted(comparisons) == sorted(a for a in expected if a != "none"), name
        assert all(c["resamples"] == 10_000 for c in comparisons.values()), name
        for arm, metrics in arms.items():
            assert 0 <= metrics["test_accuracy"] <= 1 and "test_accuracy_std" not in metrics, (name, arm)
        assert (repo / f"reports/figures/{name}-curves.png").is_file()
    assert "captcha" in (repo / "reports/README.md").read_text()
    assert "up to date" in repo_copy.dvc(repo, env, "repro").lower()
