"""The dataset registry: what each dataset's params look like, its task, and how to read it.

A prepared dataset, whatever its source, is laid out the same way, so training never decodes images:

    data/prepared/<dataset>/meta.json            dataset, image_shape [H, W, 3], split sizes, extras
    data/prepared/<dataset>/<split>/images.npy   uint8 array (n, H, W, 3), memory-mappable
    data/prepared/<dataset>/<split>/manifest.csv row i describes images[i]: label, sha256 (+ extras)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from transferbench.config.sections import Section, parse, problem
from transferbench.core import paths
from transferbench.core.errors import BadInput, ConfigError, quoted
from transferbench.core.inputs import load_array, missing, shown
from transferbench.core.redact import redact
from transferbench.core.registry import Registry
from transferbench.data.task import Task

Count = Annotated[int, Field(ge=1)]
Workers = Annotated[int, Field(ge=0)]  # processes; 0 = every core
Text = Annotated[str, Field(min_length=1)]


class DatasetParams(Section):
    """What every dataset section has: the stored image size and the worker processes that make it."""

    height: Count = Field(description="stored image height in pixels; every image is resized to it")
    width: Count = Field(description="stored image width in pixels")
    workers: Workers = Field(description="processes that make the images; 0 = every core")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)


@dataclass(frozen=True)
class DatasetSpec:
    params_model: type[DatasetParams]  # the dataset's params section
    task: Callable[[Any], Task]  # section -> task
    # (manifest, section) -> integer targets: shape (n,) for one output, (n, n_outputs) for several
    targets: Callable[[pd.DataFrame, Any], np.ndarray]
    # Photo datasets only: the class names (label i is classes[i]), the module under transferbench.data.sources
    # that fetches them (see transferbench.data.raw), and how the source's items become train/validation/test.
    classes: tuple[str, ...] = ()
    source: str | None = None
    assign_splits: Callable[[pd.DataFrame, Any, int], pd.Series] | None = None
    # The reference study's published images per split and class, for the data report (where it gave them).
    published_counts: Mapping[str, Mapping[str, int]] | None = None

    def section(self, values: Any, where: str = "") -> DatasetParams:
        """``values`` (a params mapping, or already the typed section) checked as this dataset's section."""
        return parse(self.params_model, values, where)

    def image_shape(self, values: Any) -> tuple[int, int, int]:
        return self.section(values).image_shape


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def read_manifest(path) -> pd.DataFrame:
    # Labels such as "012345" must stay strings, and "NA" is a label, not a missing value.
    return pd.read_csv(path, dtype={"label": str, "sha256": str}, keep_default_na=False)


def prepared_by(dataset: str) -> str:
    """The DVC stage that writes data/prepared/<dataset>: a fetched dataset's prepare@, else its generator."""
    return "generate_captcha" if DATASETS.get(dataset).source is None else f"prepare@{dataset}"


def load_split(dataset: str, split: str,
               shape: tuple[int, int, int] | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """The split's images (memory-mapped, read-only) and its manifest, checked against each other.

    ``shape``: the (height, width, 3) the caller's params expect, if it knows. A mismatch is BadInput
    naming the file and the stage to rerun, before anything trains or predicts on it.
    """
    folder, stage = paths.split_dir(dataset, split), prepared_by(dataset)
    images = load_array(folder / "images.npy", stage)
    if not (folder / "manifest.csv").is_file():
        raise missing(folder / "manifest.csv", stage)
    manifest = read_manifest(folder / "manifest.csv")
    found = "x".join(map(str, images.shape))
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        wrong = f"holds {images.dtype} {found}, not uint8 images of n x height x width x 3"
    elif shape is not None and images.shape[1:] != tuple(shape):
        wrong = f"holds images of {found} (n x height x width x 3), but params.yaml's {dataset} section asks " \
                f"for {'x'.join(map(str, shape))}"
    elif len(images) != len(manifest):
        wrong = f"holds {len(images)} images but {shown(folder / 'manifest.csv')} lists {len(manifest)}"
    else:
        return images, manifest
    raise BadInput(f"{shown(folder / 'images.npy')} {wrong}; the prepared data is stale or damaged, "
                   f"rerun `dvc repro {stage}`")


# ---- captcha (reference study 000) ---------------------------------------------------------

# The captcha package draws about 240 images a second at 160x80 and 1.4 at 100,000 pixels high: a side past
# this would take days to generate and fill the disk, and no model here needs one.
MAX_CAPTCHA_SIDE = 1024


class CaptchaParams(DatasetParams):
    """Generated CAPTCHAs: split sizes, image size, ``length`` characters drawn from ``alphabet``, drawing style."""

    height: Annotated[int, Field(ge=1, le=MAX_CAPTCHA_SIDE)] = Field(description="image height in pixels")
    width: Annotated[int, Field(ge=1, le=MAX_CAPTCHA_SIDE)] = Field(description="image width in pixels")
    train: Count = Field(description="CAPTCHAs generated for training")
    validation: Count = Field(description="CAPTCHAs generated for validation")
    test: Count = Field(description="CAPTCHAs generated for the test split")
    length: Annotated[int, Field(ge=1, le=32)] = Field(description="characters per CAPTCHA, one output head each")
    alphabet: Text = Field(description="the characters drawn from: printable ASCII, no space, each once; "
                                       "length and alphabet must allow twice as many strings as images")
    # Spelt out rather than imported from data.captcha.STYLES, so that editing the drawing does not rerun
    # every stage that checks params.
    style: Literal["seed000", "plain"] = Field(
        default="seed000",
        description="seed000: drawn as reference study 000 drew them (ImageMagick's rotation within +-20 degrees, "
                    "blur, implode, swirl, impulse noise, a JPEG round trip; letters twice as likely as digits), "
                    "with Pillow and NumPy; plain: the captcha package's own images, every symbol equally likely")

    @field_validator("alphabet")
    @classmethod
    def _printable_and_distinct(cls, value: str) -> str:
        if len(set(value)) != len(value):
            raise problem(f"{{where}} has a repeated character: {quoted(value)}; accepted: each character once")
        if not value.isascii() or not value.isprintable() or " " in value:
            raise problem(f"{{where}} is {quoted(value)}; accepted: printable ASCII without spaces")
        return value

    @model_validator(mode="after")
    def _enough_strings(self) -> CaptchaParams:
        total = self.train + self.validation + self.test
        distinct = len(self.alphabet) ** self.length
        # Splits must not share a string, so there must be far more strings than images.
        if total * 2 > distinct:
            sizes = " + ".join(f"{{where}}.{split} {getattr(self, split)}" for split in ("train", "validation", "test"))
            raise problem(f"{{where}}: {total} CAPTCHAs need more distinct strings than "
                          f"{len(self.alphabet)}**{self.length} = {distinct} ({{where}}.alphabet {self.alphabet!r}, "
                          f"{{where}}.length {self.length}; {sizes}); accepted: at most {distinct // 2} in all, "
                          "or a longer length or alphabet")
        return self


def captcha_targets(manifest: pd.DataFrame, values: CaptchaParams) -> np.ndarray:
    """(n, length) indices into the alphabet."""
    alphabet = values.alphabet
    lookup = np.full(128, -1, dtype=np.int64)
    lookup[[ord(c) for c in alphabet]] = np.arange(len(alphabet))
    codes = np.frombuffer("".join(manifest["label"]).encode("ascii"), dtype=np.uint8)
    targets = lookup[codes].reshape(len(manifest), values.length)
    if (targets < 0).any():
        raise ValueError("a CAPTCHA label has a character outside the alphabet")
    return targets


DATASETS.register("captcha")(DatasetSpec(
    params_model=CaptchaParams,
    task=lambda v: Task("multihead", n_classes=len(v.alphabet), n_outputs=v.length),
    targets=captcha_targets,
))


# ---- photo datasets (issue 3): fetched from their real sources, prepared once -----------------

class PhotoParams(DatasetParams):
    """What every photo section has besides its split sizes and its source."""

    tolerance: Annotated[float, Field(ge=0, le=1)] = Field(
        description="share of a split's expected images that may be lost (unreadable, duplicate, leaked across "
                    "splits) before validation stops the pipeline")


# DVC copies params into dvc.lock, and so into git and every `dvc exp` commit: an address in params.yaml must
# carry no secret. Downloads (requests) read a server's login from ~/.netrc (or the file $NETRC names).
WHERE_CREDENTIALS_GO = ("accepted: the address without them, and the login in ~/.netrc (`machine <host> login "
                        "<user> password <password>`, read by every download; $NETRC may name another file), "
                        "never in params.yaml, which DVC copies into dvc.lock, git and `dvc exp` commits")


# The Open Images bucket is read with an unsigned client: a mirror must serve its objects to anyone.
S3_WITHOUT_CREDENTIALS = ("accepted: the endpoint without them, on a mirror that serves the bucket's objects "
                          "without credentials (images are read anonymously, as from the public bucket); never "
                          "in params.yaml, which DVC copies into dvc.lock, git and `dvc exp` commits")


def no_credentials(url: str, accepted: str = WHERE_CREDENTIALS_GO) -> str:
    """``url`` unless it carries credentials (``user:password@``, a signed or token query): a problem then.

    What counts as a credential is what transferbench.core.redact masks, so the two cannot disagree.
    """
    if redact(url) != url:
        raise problem(f"{{where}} has an address with credentials in it ({quoted(redact(url))}); {accepted}")
    return url


class UrlSource(Section):
    urls: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] = Field(
        description="http://, https:// or file:// addresses of the archive, tried in order; no login in them "
                    "(DVC copies params into git): a mirror's goes in ~/.netrc")
    sha256: str | None = Field(description="the archive's sha256 (64 lowercase hex digits), or null for a source "
                                           "that publishes none (fetch.json records the one to pin)")

    @field_validator("urls")
    @classmethod
    def _schemes(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("https://", "http://", "file://")):
                raise problem(f"{{where}} has {quoted(url)}; accepted: http://, https:// or file:// addresses")
            no_credentials(url)
        return value

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 64 or any(c not in "0123456789abcdef" for c in value)):
            raise problem(f"{{where}} is {quoted(value)}; accepted: 64 lowercase hex digits, or null for a source "
                          "that publishes none")
        return value


class OpenImagesSource(Section):
    csv_base: Text = Field(description="where {split}/{split}-annotations-human-imagelabels.csv live")
    s3_endpoint: str = Field(description="'' = AWS S3; else an S3-compatible mirror's address (read anonymously), "
                                         "e.g. http://minio.internal:9000")
    bucket: Text = Field(description="the bucket holding the images")
    limit: Annotated[int, Field(ge=0)] = Field(description="images per class and split, for quick runs; 0 = all")
    download_workers: Count = Field(description="parallel image downloads")
    retries: Count = Field(description="tries per download")

    @field_validator("csv_base")
    @classmethod
    def _no_login(cls, value: str) -> str:
        return no_credentials(value)

    @field_validator("s3_endpoint")
    @classmethod
    def _anonymous(cls, value: str) -> str:
        return no_credentials(value, S3_WITHOUT_CREDENTIALS)


class KaggleSource(Section):
    competition: Text = Field(description="the Kaggle competition whose files are fetched; the login goes in "
                                          "~/.kaggle/kaggle.json (or KAGGLE_USERNAME and KAGGLE_KEY)")


class PetsParams(PhotoParams):
    """Reference study 000: Open Images V4 cat / dog / bird, official splits, human-verified labels (confidence 1)."""

    source: OpenImagesSource = Field(description="where the images come from: Open Images' labels and bucket")


class DogsVsCatsParams(PhotoParams):
    """Reference study 003: training, validation and test images stratified from Kaggle's 25,000 labelled ones."""

    train: Count = Field(description="training images drawn")
    validation: Count = Field(description="validation images drawn")
    test: Count = Field(description="test images drawn")
    source: KaggleSource = Field(description="where the images come from")


class CatsAndDogsFilteredParams(PhotoParams):
    """Reference study 002: Google's 2,000 train / 1,000 validation; the validation half is cut into validation
    and test."""

    validation: Count = Field(description="images of the zip's validation folder kept for validation")
    test: Count = Field(description="images of the zip's validation folder kept for test")
    source: UrlSource = Field(description="where the zip comes from")


class Cifar10Params(PhotoParams):
    """Reference study 004: 50,000 train / 10,000 test; validation is carved out of train."""

    validation: Count = Field(description="images of the source's train split kept for validation")
    source: UrlSource = Field(description="where the archive comes from")


def photo_targets(manifest: pd.DataFrame, values: Any, classes: tuple[str, ...]) -> np.ndarray:
    """Class indices (n,) in ``classes`` order; binary tasks get 0/1 the same way."""
    lookup = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(manifest["label"]) - set(lookup))
    if unknown:
        raise ValueError(f"label {unknown[0]!r} is not a class of this dataset; classes: {', '.join(classes)}")
    return manifest["label"].map(lookup).to_numpy(dtype=np.int64)


def _photo(params_model: type[PhotoParams], classes: tuple[str, ...], source: str, assign_splits,
           published_counts=None) -> DatasetSpec:
    """A photo dataset's entry: its params section, classes, source module and split rule."""
    return DatasetSpec(
        params_model=params_model,
        task=lambda v: Task("binary", n_classes=2) if len(classes) == 2 else Task("multiclass", len(classes)),
        targets=lambda manifest, v: photo_targets(manifest, v, classes),
        classes=classes, source=source, assign_splits=assign_splits, published_counts=published_counts,
    )


def _pets_splits(items: pd.DataFrame, values: PetsParams, seed: int) -> pd.Series:
    from transferbench.data.splits import official

    return official(items["source_split"])


def _kaggle_splits(items: pd.DataFrame, values: DogsVsCatsParams, seed: int) -> pd.Series:
    from transferbench.data.splits import stratified

    sizes = {"train": values.train, "validation": values.validation, "test": values.test}
    return stratified(items["label"], sizes, seed, where="dogs_vs_cats")


def _filtered_splits(items: pd.DataFrame, values: CatsAndDogsFilteredParams, seed: int) -> pd.Series:
    # The zip has train (2,000) and validation (1,000) only: validation is cut into validation and test.
    from transferbench.data.splits import UNUSED, stratified

    out = pd.Series(UNUSED, index=items.index, dtype=object)
    out[items["source_split"] == "train"] = "train"
    held_out = items["source_split"] == "validation"
    sizes = {"validation": values.validation, "test": values.test}
    out[held_out] = stratified(items.loc[held_out, "label"], sizes, seed,
                               where="cats_and_dogs_filtered (from the zip's validation folder)")
    return out


def _cifar_splits(items: pd.DataFrame, values: Cifar10Params, seed: int) -> pd.Series:
    # CIFAR-10 has train (50,000) and test (10,000): validation is carved out of train, stratified.
    from transferbench.data.splits import stratified

    out = pd.Series("test", index=items.index, dtype=object)
    train = items["source_split"] == "train"
    n_train = int(train.sum()) - values.validation
    classes = items.loc[train, "label"].nunique()
    if n_train < classes:  # train keeps the rest, and needs every class
        raise ConfigError(f"cifar10.validation is {values.validation} but the source's train split has "
                          f"{int(train.sum())} images; accepted: at most {int(train.sum()) - classes}, so train "
                          f"keeps one image of each of its {classes} classes")
    out[train] = stratified(items.loc[train, "label"], {"validation": values.validation, "train": n_train},
                            seed, where="cifar10 (from the source's train split)")
    return out


DATASETS.register("pets")(_photo(
    PetsParams, classes=("cat", "dog", "bird"), source="openimages",
    assign_splits=_pets_splits,
    published_counts={  # reference study 000's `ls` of its folders (images with two labels kept under one)
        "train": {"cat": 53137, "dog": 89369, "bird": 105962},
        "validation": {"cat": 303, "dog": 1480, "bird": 1052},
        "test": {"cat": 907, "dog": 4491, "bird": 3222},
    },
))

DATASETS.register("dogs_vs_cats")(_photo(
    DogsVsCatsParams, classes=("cat", "dog"), source="kaggle_dogs_vs_cats",
    assign_splits=_kaggle_splits,
))

DATASETS.register("cats_and_dogs_filtered")(_photo(
    CatsAndDogsFilteredParams, classes=("cat", "dog"), source="cats_and_dogs_filtered",
    assign_splits=_filtered_splits,
    published_counts={"train": {"cat": 1000, "dog": 1000}, "validation": {"cat": 500, "dog": 500}},
))

DATASETS.register("cifar10")(_photo(
    Cifar10Params,
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    source="cifar10",
    assign_splits=_cifar_splits,
    published_counts={"train": {"*": 50000}, "test": {"*": 10000}},
))
