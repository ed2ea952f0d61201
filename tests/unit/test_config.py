"""Bad input is refused before any work, with one line that names the key, the value and what is accepted."""

from __future__ import annotations

import re
import typing

import pytest
from pydantic import BaseModel, ValidationError

from transferbench.config.experiment import Partial, Plateau, TwoPhase
from transferbench.config.weights import FILE_NAME, HDF5_SIGNATURE, Arm
from transferbench.core import paths
from transferbench.core.errors import ConfigError
from transferbench.data.datasets import DATASETS, DatasetParams
from transferbench.models.strategies import check_freeze
from transferbench.study.params import (
    EXPERIMENT_NAME,
    Params,
    check_params,
    load_params,
    read_params_file,
)


def test_repository_params_are_valid_and_typed():
    params = load_params()
    assert isinstance(params, Params)
    assert params.weights == (Arm("imagenet"), Arm("none"))
    assert params.experiments["captcha"].model == "xception"
    assert params.experiments["captcha"].batch_size == 16
    assert isinstance(params.experiments["captcha"].schedule, Plateau)
    assert isinstance(params.experiments["cats_and_dogs_filtered"], TwoPhase)
    assert params.experiments["cats_and_dogs_filtered"].freeze == 0
    assert params.dataset("captcha").image_shape == (80, 160, 3)
    assert params.arms("cifar10") == (Arm("none"),)


def test_params_declares_one_optional_section_per_registered_dataset():
    sections = {name: field for name, field in Params.model_fields.items()
                if any(isinstance(t, type) and issubclass(t, DatasetParams) for t in _types(field.annotation))}
    assert sorted(sections) == DATASETS.names()
    for name, field in sections.items():
        assert field.annotation == DATASETS.get(name).params_model | None and field.default is None, name


def test_every_param_says_what_it_is_for():
    undescribed = [f"{model.__name__}.{name}" for model in _section_models(Params)
                   for name, field in model.model_fields.items() if not field.description]
    assert undescribed == []


def check_fails(params, *fragments):
    with pytest.raises(ConfigError) as err:
        check_params(params)
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)


def test_unknown_model_lists_valid_names(params):
    params["experiments"]["captcha"]["model"] = "resnet9000"
    check_fails(params, "'resnet9000'", "cnn, googlenet, vgg16, xception")


def test_unknown_dataset(params):
    params["experiments"]["captcha"]["dataset"] = "mnist"
    check_fails(params, "'mnist'", "captcha")


def test_experiment_without_its_dataset_section(params):
    del params["captcha"]
    check_fails(params, "no 'captcha' section")


@pytest.mark.parametrize("value", ["imagenette", "", 3])
def test_unknown_weights_value(params, value):
    params["weights"] = value
    check_fails(params, f"weights is {value!r}", "imagenet, none")


def test_weights_file_missing(params, tmp_path):
    params["weights"] = str(tmp_path / "absent.weights.h5")
    check_fails(params, "absent.weights.h5", "does not exist")


def test_weights_file_corrupt(params, tmp_path):
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    params["weights"] = str(bad)
    check_fails(params, "bad.weights.h5", "not an HDF5 file")


def test_weights_none_spellings_and_a_file_relative_to_the_root(params, tmp_path):
    (tmp_path / "start.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(8))
    for value in ("none", None, ["none"]):
        params["weights"] = value
        assert check_params(params).weights == (Arm("none"),)
    params["weights"] = ["imagenet", "start.weights.h5"]
    arms = check_params(params, root=tmp_path).weights
    assert arms == (Arm("imagenet"), Arm("start.weights.h5", tmp_path / "start.weights.h5"))
    assert [arm.label for arm in arms] == ["imagenet", "file-start.weights.h5"]


@pytest.mark.parametrize("key,value", [("train", 0), ("validation", -5), ("test", 0), ("length", 0)])
def test_counts_must_be_positive(params, key, value):
    params["captcha"][key] = value
    check_fails(params, f"captcha.{key}", ">= 1", repr(value))


def test_image_under_model_minimum(params):
    params["captcha"]["height"] = 60  # the captcha package's default height: too small for Xception
    check_fails(params, "experiments.captcha", "160x60", "xception", "71")


def test_unknown_key_is_an_error(params):
    params["experiments"]["captcha"]["epoch"] = 3  # typo of `epochs`
    check_fails(params, "unknown key experiments.captcha.epoch", "accepted: dataset, model", "epochs")
    del params["experiments"]["captcha"]["epoch"]
    params["captcha"]["colour"] = "red"
    check_fails(params, "unknown key captcha.colour", "alphabet")
    del params["captcha"]["colour"]
    params["learning_rate"] = 0.1
    check_fails(params, "unknown key learning_rate", "weights, seed, seeds, experiments",
                "train_fraction, tuning, random_schedule", "captcha", "cifar10")


def test_distribution_defaults_to_one_device_and_accepts_data_parallel(params):
    assert load_params().distribution == "none"
    del params["distribution"]
    assert check_params(params).distribution == "none"
    params["distribution"] = "data_parallel"
    assert check_params(params).distribution == "data_parallel"


def test_missing_key(params):
    del params["experiments"]["captcha"]["epochs"]
    check_fails(params, "missing key experiments.captcha.epochs")
    params["experiments"]["captcha"]["epochs"] = 30
    del params["experiments"]["captcha"]["strategy"]
    check_fails(params, "experiments.captcha must be a mapping with `strategy`", "full, partial, frozen, two_phase")


def refusal(params: dict, where: tuple, value) -> str:
    """The one-line error that setting params' key path ``where`` to ``value`` gets from the params check."""
    section = params
    for key in where[:-1]:
        section = section[key]
    section[where[-1]] = value
    with pytest.raises(ConfigError) as err:
        check_params(params)
    return str(err.value)


@pytest.mark.parametrize("where, value, fragments", [
    (("seed",), -1, ["seed must be >= 0, got -1"]),
    (("experiments", "captcha", "batch_size"), "16", ["experiments.captcha.batch_size must be an integer, got '16'"]),
    (("experiments", "captcha", "batch_size"), True, ["experiments.captcha.batch_size must be an integer, got True"]),
    (("experiments", "captcha", "learning_rate"), 0, ["experiments.captcha.learning_rate must be > 0, got 0"]),
    (("experiments", "captcha", "learning_rate"), "1e-3", ["learning_rate must be a number, got '1e-3'"]),
    (("experiments", "captcha", "model"), "", ["experiments.captcha.model must be a non-empty string"]),
    (("experiments", "captcha"), "xception", ["experiments.captcha must be a mapping", "'xception'"]),
    (("experiments",), {}, ["experiments must have at least 1 entries"]),
    (("pets", "source", "limit"), -1, ["pets.source.limit must be >= 0, got -1"]),
    (("cifar10", "source", "urls"), ["ftp://x"], ["cifar10.source.urls has 'ftp://x'", "https://"]),
    (("cifar10", "source", "sha256"), "ABC", ["cifar10.source.sha256 is 'ABC'", "64 lowercase hex digits"]),
    (("cats_and_dogs_filtered", "tolerance"), 1.5, ["cats_and_dogs_filtered.tolerance must be <= 1, got 1.5"]),
    (("distribution",), "mirrored", ["distribution is 'mirrored'; accepted: none, data_parallel"]),
    (("distribution",), None, ["distribution is None; accepted: none, data_parallel"]),
])
def test_each_bad_value_is_one_line_naming_its_dotted_key(params, where, value, fragments):
    message = refusal(params, where, value)
    assert "\n" not in message and all(f in message for f in fragments), message


def test_unknown_head_and_optimizer(params):
    params["experiments"]["captcha"]["head"] = "svm9"
    check_fails(params, "'svm9'", "dense")
    params["experiments"]["captcha"]["head"] = "dense"
    params["experiments"]["captcha"]["optimizer"] = "adagrad"
    check_fails(params, "'adagrad'", "adam, rmsprop, sgd")


def test_model_without_imagenet_weights(params):
    params["experiments"]["captcha"]["model"] = "cnn"
    check_fails(params, "weights has imagenet", "'cnn'", "no ImageNet weights", "weights=none",
                "experiments.captcha.weights")
    params["experiments"]["captcha"]["weights"] = ["none", "imagenet"]
    check_fails(params, "experiments.captcha.weights has imagenet", "'cnn'", "no ImageNet weights")
    del params["experiments"]["captcha"]["weights"]
    params["weights"] = "none"
    check_params(params)


def test_too_few_distinct_strings(params):
    params["captcha"].update(alphabet="AB", length=3)
    check_fails(params, "2**3")


# ---- strategies, heads, pooling, augmentation and schedules ----------------------------------

def captcha(params) -> dict:
    return params["experiments"]["captcha"]


def test_unknown_strategy_lists_them(params):
    captcha(params)["strategy"] = "finetune"
    check_fails(params, "experiments.captcha.strategy", "'finetune'", "full, partial, frozen, two_phase")


@pytest.mark.parametrize("freeze,fragments", [
    (0, ["experiments.captcha.freeze is 0", "layer count >= 1"]),
    (1.5, ["freeze is 1.5", "0 < f < 1"]),
    (-3, ["freeze is -3", "layer count >= 1"]),
    ("half", ["'half'", "layer count", "fraction 0 < f < 1"]),
    (True, ["True", "layer count", "fraction 0 < f < 1"]),
])
def test_partial_freeze_out_of_range(params, freeze, fragments):
    captcha(params).update(strategy="partial", freeze=freeze)
    check_fails(params, *fragments)


@pytest.mark.parametrize("freeze,fragments", [
    (200, ["experiments.captcha.freeze is 200", "132 layers", "from 1 to 131"]),
    (132, ["freeze is 132", "132 layers", "from 1 to 131"]),
    (0.001, ["freeze is 0.001 (0 of them)", "0 < f < 1"]),
])
def test_partial_freeze_beyond_the_core_is_refused_by_the_stage_that_builds_it(params, freeze, fragments):
    # Xception's core has 132 layers; params checking cannot know that without building it.
    captcha(params).update(strategy="partial", freeze=freeze)
    settings = check_params(params).experiments["captcha"]
    with pytest.raises(ConfigError) as err:
        check_freeze("experiments.captcha", settings, n_layers=132)
    assert all(f in str(err.value) for f in fragments), str(err.value)


def test_partial_freeze_in_range_passes(params):
    captcha(params).update(strategy="partial", freeze=131)
    check_freeze("experiments.captcha", check_params(params).experiments["captcha"], n_layers=132)
    captcha(params)["freeze"] = 0.5
    check_freeze("experiments.captcha", check_params(params).experiments["captcha"], n_layers=132)


def test_two_phase_needs_its_keys_and_head_epochs_below_epochs(params):
    captcha(params).update(strategy="two_phase", head_epochs=30, freeze=0)
    check_fails(params, "strategy two_phase needs fine_tune_learning_rate",
                "+experiments.captcha.fine_tune_learning_rate")
    captcha(params)["fine_tune_learning_rate"] = 1e-5
    check_fails(params, "head_epochs is 30", "epochs is 30", "1 <= head_epochs < epochs")
    captcha(params)["head_epochs"] = 0
    check_fails(params, "experiments.captcha.head_epochs", ">= 1", "0")
    captcha(params)["head_epochs"] = 5
    check_params(params)


def test_a_key_of_another_strategy_is_refused(params):
    captcha(params).update(strategy="full", freeze=10)
    check_fails(params, "experiments.captcha.freeze is for strategy partial / two_phase, not full")
    captcha(params).update(strategy="partial", head_epochs=3)
    check_fails(params, "head_epochs is for strategy two_phase, not partial")


@pytest.mark.parametrize("schedule,fragments", [
    ({"kind": "cosine"}, ["schedule.kind is 'cosine'", "constant, plateau, step"]),
    ({"kind": "step", "factor": 0.96}, ["missing key experiments.captcha.schedule.every"]),
    ({"kind": "plateau", "factor": 0.5, "patience": 3, "min_lr": 1e-6, "every": 2},
     ["unknown key experiments.captcha.schedule.every", "accepted: kind, factor, patience, min_lr"]),
    ({"kind": "constant", "factor": 0.5}, ["unknown key experiments.captcha.schedule.factor", "accepted: kind"]),
    ({"kind": "step", "factor": 1.5, "every": 8}, ["schedule.factor must be < 1", "1.5"]),
    ({"kind": "step", "factor": 0.96, "every": 0}, ["schedule.every must be >= 1", "0"]),
    ({"factor": 0.5}, ["must be a mapping with `kind`", "constant, plateau, step"]),
])
def test_bad_schedule(params, schedule, fragments):
    captcha(params)["schedule"] = schedule
    check_fails(params, *fragments)


def test_seed_004_step_schedule_passes(params):
    captcha(params)["schedule"] = {"kind": "step", "factor": 0.96, "every": 8}
    check_params(params)


def test_unknown_pooling_and_augmentation(params):
    captcha(params)["pooling"] = "sum"
    check_fails(params, "'sum'", "max, avg, flatten")
    captcha(params).update(pooling="flatten", augment="rotate")
    check_fails(params, "'rotate'", "none, flip")


def test_head_settings_that_do_not_fit(params):
    captcha(params).update(head="gap", pooling="max")
    check_fails(params, "head 'gap'", "pooling 'max'", "accepted: pooling avg")
    captcha(params).update(pooling="avg", head_units=64)
    check_fails(params, "head 'gap'", "head_units 64", "accepted: head_units 0")
    captcha(params).update(head="svm", head_units=0, head_l2=0.0)
    check_fails(params, "head 'svm'", "head_l2 0.0", "head_l2 > 0")
    captcha(params)["head_l2"] = 1e-4
    check_params(params)
    captcha(params)["head_dropout"] = 1.0
    check_fails(params, "head_dropout must be < 1", "1.0")
    captcha(params).update(head_dropout=0.5, head_units=-1)
    check_fails(params, "head_units must be >= 0", "-1")


def test_model_list_includes_googlenet(params):
    captcha(params)["model"] = "inception"
    check_fails(params, "'inception'", "cnn, googlenet, vgg16, xception")


def test_a_key_twice_in_params_yaml_is_refused_naming_it_and_both_lines(tmp_path):
    path = tmp_path / "params.yaml"
    text = paths.PARAMS.read_text(encoding="utf-8")
    lines = text.splitlines()
    seeds = next(i for i, line in enumerate(lines, 1) if line.startswith("seeds:"))
    path.write_text(text + "\nseeds: 9\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"params.yaml: key 'seeds' appears twice, on lines {seeds} and "
                                          rf"{len(lines) + 2}; accepted: each key once"):
        load_params(path)


def test_a_nested_key_twice_is_refused_and_a_merge_key_may_be_overridden(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("a:\n  b: 1\n  c: 2\n  b: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"key 'b' appears twice, on lines 2 and 4"):
        load_params(path)
    path.write_text("base: &base {x: 1, y: 2}\nz:\n  <<: *base\n  x: 5\n", encoding="utf-8")
    assert read_params_file(path) == {"base": {"x": 1, "y": 2}, "z": {"x": 5, "y": 2}}


def test_params_yaml_that_does_not_parse_names_its_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 42\nweights: [none\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"params.yaml:3: not valid YAML"):
        load_params(path)


# ---- finite numbers only ----------------------------------------------------------------------

def _types(annotation) -> list:
    """The types inside ``annotation``: through Annotated, unions, lists, tuples and dicts."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _types(typing.get_args(annotation)[0])
    if origin is None:
        return [annotation]
    return [t for arg in typing.get_args(annotation) for t in _types(arg)]


def _section_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and every section model reachable from its fields, each once."""
    found = [model]
    for section in found:
        for field in section.model_fields.values():
            found += [t for t in _types(field.annotation)
                      if isinstance(t, type) and issubclass(t, BaseModel) and t not in found]
    return found


def _mappings(node, path=()):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _mappings(value, (*path, key))


# Sections params.yaml does not use, each with what makes one valid where it goes.
OTHER_SECTIONS = {Partial: (("experiments", "pets"), {"strategy": "partial", "freeze": 1})}


def _float_fields() -> list[tuple[tuple[str, ...], dict, str, bool]]:
    """(where in params, what to set there first, field, is a list) for every float field of every section."""
    repository = read_params_file()
    placed = {model: (path, {}) for model, (path, change) in OTHER_SECTIONS.items()}
    for path, mapping in _mappings(repository):
        for model in _section_models(Params):
            if model not in placed:
                try:
                    model.model_validate(mapping, context={"root": paths.ROOT})
                    placed[model] = (path, {})
                except ValidationError:
                    pass
    placed.update(OTHER_SECTIONS)
    fields = []
    for model in _section_models(Params):
        for name, field in model.model_fields.items():
            if float in _types(field.annotation):
                assert model in placed, f"{model.__name__}.{name}: add a valid {model.__name__} to OTHER_SECTIONS"
                path, change = placed[model]
                fields.append((path, change, name, typing.get_origin(field.annotation) is list))
    return fields


FLOAT_FIELDS = _float_fields()


def test_float_fields_are_found_in_every_section():
    names = {".".join((*path, name)) for path, _, name, _ in FLOAT_FIELDS}
    assert {"experiments.pets.learning_rate", "experiments.pets.head_l2", "experiments.pets.head_dropout",
            "experiments.pets.schedule.min_lr", "experiments.cifar10.schedule.factor", "pets.tolerance",
            "experiments.cats_and_dogs_filtered.fine_tune_learning_rate", "train_fraction", "tuning.factors",
            "random_schedule"} <= names, names


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("path, change, name, listed", FLOAT_FIELDS,
                         ids=[".".join((*p, n)) for p, _, n, _ in FLOAT_FIELDS])
def test_no_float_param_takes_infinity_or_nan(params, path, change, name, listed, value):
    section = params
    for key in path:
        section = section[key]
    section.update(change)
    section[name] = [value] if listed else value
    with pytest.raises(ConfigError) as err:
        check_params(params)
    message = str(err.value)
    assert "\n" not in message and ".".join((*path, name)) in message and repr(value) in message, message


@pytest.mark.parametrize("spelling", [".inf", ".nan", "-.inf"])
def test_learning_rate_inf_or_nan_in_params_yaml_is_one_line(tmp_path, spelling):
    text = paths.PARAMS.read_text(encoding="utf-8").replace("learning_rate: 0.001", f"learning_rate: {spelling}", 1)
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^experiments\.pets\.learning_rate must be a finite number, got "):
        load_params(tmp_path / "params.yaml")


# ---- names that become paths ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../x", "a/b", "/tmp/x", "caf\u00e9", "x" * 300, "x\n", "_x", "1x", "a-b", 7])
def test_an_experiment_name_that_is_no_safe_folder_is_one_line_with_the_pattern(params, name):
    params["experiments"][name] = params["experiments"]["captcha"]
    with pytest.raises(ConfigError) as err:
        check_params(params)
    message = str(err.value)
    assert "\n" not in message and len(message) < 300, message
    assert message.startswith(f"experiments has the name {repr(name)[:40]}"), message
    assert "accepted: names matching [A-Za-z][A-Za-z0-9_]{0,63}" in message, message


def test_every_experiment_name_in_params_yaml_is_a_safe_folder_up_to_64_characters(params):
    assert all(re.fullmatch(EXPERIMENT_NAME, name) for name in params["experiments"])
    params["experiments"]["x" * 64] = params["experiments"]["captcha"]
    assert "x" * 64 in check_params(params).experiments


@pytest.mark.parametrize("name", ["caf\u00e9.weights.h5", "a b.weights.h5", "x" * 200 + ".weights.h5",
                                  "-rf.weights.h5"])
def test_a_weights_file_whose_name_is_no_safe_label_is_refused_naming_it(params, tmp_path, name):
    (tmp_path / name).write_bytes(HDF5_SIGNATURE + bytes(8))
    params["weights"] = ["imagenet", name]
    with pytest.raises(ConfigError) as err:
        check_params(params, root=tmp_path)
    message = str(err.value)
    assert "\n" not in message and len(message) < 400, message
    assert message.startswith(f"weights file {repr(name)[:40]}") and FILE_NAME in message, message


# ---- no credentials in params -----------------------------------------------------------------

@pytest.mark.parametrize("where, value, advice", [
    (("cifar10", "source", "urls"), ["https://reader:s3cr3t@mirror.example/c.tar.gz"], "~/.netrc"),
    (("cats_and_dogs_filtered", "source", "urls"), ["https://mirror.example/z.zip",
                                                    "https://b.example/z.zip?X-Amz-Signature=s3cr3t"], "~/.netrc"),
    (("pets", "source", "csv_base"), "https://mirror.example/oi/?token=s3cr3t", "~/.netrc"),
    (("pets", "source", "csv_base"), "https://h.example/oi/?sv=1&sig=s3cr3t", "~/.netrc"),
    (("pets", "source", "csv_base"), "https://h.example/oi/?Signature=s3cr3t&Expires=1", "~/.netrc"),
    (("pets", "source", "s3_endpoint"), "http://minio:s3cr3t@mirror.example:9000", "without credentials"),
])
def test_an_address_with_credentials_in_params_is_one_line_saying_where_they_go(params, where, value, advice):
    message = refusal(params, where, value)
    assert "\n" not in message and "s3cr3t" not in message, message
    assert message.startswith(f"{'.'.join(where)} has an address with credentials in it (") and advice in message
    assert "dvc.lock" in message, message


# ---- lesser bounds: image sides, long values --------------------------------------------------

@pytest.mark.parametrize("key, value", [("height", 100_000), ("width", 1025)])
def test_a_captcha_side_over_the_limit_names_it(params, key, value):
    params["captcha"][key] = value
    check_fails(params, f"captcha.{key} must be <= 1024, got {value}")
    params["captcha"].update(height=1024, width=1024)
    check_params(params)


@pytest.mark.parametrize("where", [("experiments", "captcha", "model"), ("weights",), ("captcha", "alphabet"),
                                   ("experiments", "captcha", "batch_size"), ("cifar10", "source", "sha256")])
def test_a_long_bad_value_is_quoted_by_its_start_and_length(params, where):
    section = params
    for key in where[:-1]:
        section = section[key]
    section[where[-1]] = "\u00e9" * 30_000
    with pytest.raises(ConfigError) as err:
        check_params(params)
    message = str(err.value)
    assert "\n" not in message and len(message) < 400 and "… (30,002 characters)" in message, message


def test_a_long_unknown_key_is_named_by_its_start_and_length(params):
    params["experiments"]["captcha"]["k" * 10_000] = 1
    with pytest.raises(ConfigError, match=r"^unknown key experiments\.captcha\.k{60}… \(10,000 characters\); "):
        check_params(params)
