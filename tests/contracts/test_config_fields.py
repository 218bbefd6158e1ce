"""One range per setting, one name per layer.

A config declares each number's range once (``bounded`` with a named Range of
``saliency/core/limits.py``); the CLI's click type is built from the same Range, so neither
repeats the other. A config, and the library under it, names fields in its messages; the CLI
says the flag instead. The scans read the sources, as test_layers.py does.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import re

import click
import pytest

from conftest import REPO, assert_one_line_error
from saliency.core import limits
from saliency.core.errors import ConfigError, UserError
from saliency.core.fields import RANGE, Range, bounded, check_ranges, floats, ints
from pipelines.options import flag_names, option_range


# ------------------------------------------------------------------ the declarations themselves
@dataclasses.dataclass
class _Settings:
    steps: int = bounded(limits.STEPS, 10)
    rate: float = bounded(limits.POSITIVE, 0.1)
    share: float | None = bounded(limits.POSITIVE_FRACTION)
    side: int = bounded(limits.RESOLUTION, 64)


@pytest.mark.parametrize("change, message", [
    ({"steps": 0}, "steps must be an integer in [1, 10000000], got 0"),
    ({"steps": 2.5}, "steps must be an integer in [1, 10000000], got 2.5"),
    ({"steps": True}, "steps must be an integer in [1, 10000000], got True"),
    ({"rate": 0.0}, "rate must be positive, got 0.0"),
    ({"rate": math.nan}, "rate must be positive, got nan"),
    ({"rate": math.inf}, "rate must be positive, got inf"),
    ({"share": 0.0}, "share must be in (0, 1], got 0.0"),
    ({"share": 1.01}, "share must be in (0, 1], got 1.01"),
    ({"side": 8}, "side must be an integer in [16, 1024], got 8"),
    ({"side": 2048}, "side must be an integer in [16, 1024], got 2048"),
])
def test_a_value_outside_its_declared_range_is_refused_by_its_field_name(change, message):
    with pytest.raises(ConfigError) as caught:
        check_ranges(_Settings(**change))
    assert str(caught.value) == message
    assert caught.value.fields == [next(iter(change))]


def test_the_ends_of_each_range_and_an_unset_optional_field_are_allowed():
    for settings in (_Settings(), _Settings(steps=1, rate=1e-12, share=1.0, side=16),
                     _Settings(steps=limits.MAX_STEPS, share=None, side=1024)):
        check_ranges(settings)


def test_a_config_error_says_the_field_to_python_and_the_flag_on_the_command_line():
    error = ConfigError("`plateau_change` needs `rca_every`, and a `plateau_window` of at least one `rca_every`")
    assert isinstance(error, UserError) and error.exit_code == 2
    assert str(error) == "plateau_change needs rca_every, and a plateau_window of at least one rca_every"
    assert error.naming({"plateau_change": "--stop-rca-change", "rca_every": "--rca-every"}) == (
        "--stop-rca-change needs --rca-every, and a plateau_window of at least one --rca-every")
    # a command line quoted in backticks is not a field: spaces keep it whole
    assert str(ConfigError("run `saliency fetch-data ecssd` or pass `source`")) == (
        "run `saliency fetch-data ecssd` or pass source")


def test_click_types_are_built_from_the_ranges():
    assert option_range(ints(1, 5)).to_info_dict() == click.IntRange(1, 5).to_info_dict()
    assert option_range(floats(0, 1, low_open=True)).to_info_dict() == \
        click.FloatRange(0, 1, min_open=True).to_info_dict()
    with pytest.raises(click.BadParameter):
        option_range(limits.OPEN_FRACTION).convert("1.0", None, None)


# ------------------------------------------------------------------ the CLI reads the configs' ranges
def _configs():
    from pipelines.discover import DiscoverConfig
    from pipelines.evaluate import EvalConfig
    from pipelines.pipeline import PipelineConfig
    from pipelines.predict import PredictConfig
    from pipelines.sample import SampleConfig
    from pipelines.synthesize import SynthesizeConfig
    from pipelines.vote import VoteConfig
    from saliency.augment import AugmentSettings
    from saliency.training import UNetTrainSettings

    return {"sample": [SampleConfig], "discover": [DiscoverConfig], "synthesize": [SynthesizeConfig],
            "train-unet": [UNetTrainSettings, AugmentSettings], "eval": [EvalConfig], "predict": [PredictConfig],
            "pipeline": [PipelineConfig], "vote": [VoteConfig]}  # (sweep forwards discover's own options)


def _declared(configs) -> dict[str, Range]:
    return {field.name: field.metadata[RANGE] for config in configs for field in dataclasses.fields(config)
            if RANGE in field.metadata}


@pytest.mark.parametrize("command", sorted(_configs()))
def test_every_option_that_sets_a_bounded_field_has_that_fields_range(command):
    from pipelines.cli import cli

    declared = _declared(_configs()[command])
    params = {param.name: param for param in cli.commands[command].params if isinstance(param, click.Option)}
    checked = [name for name in declared if name in params]
    assert checked, f"{command}: no option sets a bounded field"
    for name in checked:
        assert params[name].type.to_info_dict() == option_range(declared[name]).to_info_dict(), (command, name)


def _config_of_command():
    from pipelines.fetch_data import FetchDataConfig
    from pipelines.fetch_weights import FetchWeightsConfig
    from pipelines.serve import ServeConfig
    from pipelines.sweep import SweepConfig
    from pipelines.train_unet import TrainUNetConfig

    configs = {name: classes[0] for name, classes in _configs().items()}
    return {**configs, "train-unet": TrainUNetConfig, "fetch-data": FetchDataConfig,
            "fetch-weights": FetchWeightsConfig, "serve": ServeConfig, "sweep": SweepConfig}


@pytest.mark.parametrize("command", sorted(_config_of_command()))
def test_every_option_reaches_its_config_field_by_name(command):
    """An option is declared on its command and received by the field of the same name
    (``config_from``): nothing in between to keep in step."""
    from pipelines.cli import cli
    from pipelines.options import GENERATOR_OPTIONS

    config = _config_of_command()[command]
    fields = {field.name for field in dataclasses.fields(config)}
    if "generator_options" in fields:
        fields |= set(GENERATOR_OPTIONS)
    names = {param.name for param in cli.commands[command].params}
    assert names <= fields, f"{command}: options with no field: {sorted(names - fields)}"


def test_config_from_refuses_an_option_with_no_field():
    from pipelines.options import config_from
    from pipelines.vote import VoteConfig

    with pytest.raises(TypeError, match="no field for the option 'unknown'"):
        config_from(VoteConfig, {"classifier": "scenes-shapes", "out": "x.json", "unknown": 1})
    made = config_from(VoteConfig, {"classifier": "scenes-shapes", "out": "x.json", "top_k": 3})
    assert (made.classifier, made.top_k, made.class_fraction) == ("scenes-shapes", 3, 0.25)


# ------------------------------------------------------------------ messages: fields below, flags above
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
COMMAND_IN_BACKTICKS = re.compile(r"`[^`]* [^`]*`")  # `saliency fetch-data ... --from DIR`: a command to run


def _raised_texts(path):
    """The string parts of every ``raise SomethingError(...)`` in a source file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            parts = [n.value for n in ast.walk(node.exc) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
            yield node.lineno, "".join(parts)


def _messages_with_flags(base, roots) -> list[str]:
    found = []
    for root in roots:
        for path in sorted((base / root).rglob("*.py")):
            for line, text in _raised_texts(path):
                for flag in FLAG.findall(COMMAND_IN_BACKTICKS.sub("", text)):
                    found.append(f"{path.relative_to(base)}:{line}: {flag}")
    return found


# The flags that stay in library messages, each naming no config field: --no-verify is the
# negative of a switch; --from is an option of the `saliency fetch-weights` command the message
# quotes just before it ("add --from FILE.tflite offline").
ALLOWED = {"saliency/downloads/datasets.py: --no-verify", "saliency/classifiers.py: --from", "saliency/unet.py: --from"}


def test_the_library_names_fields_not_flags_in_its_messages():
    found = _messages_with_flags(REPO, ["saliency", "directions"])
    assert [entry for entry in found if re.sub(r":\d+:", ":", entry) not in ALLOWED] == []


def test_the_scan_finds_a_flag_in_a_library_message(tmp_path):
    (tmp_path / "saliency").mkdir()
    (tmp_path / "saliency" / "bad.py").write_text(
        "def f(n):\n"
        "    raise UserError(f'{n} pairs: more than --val-count')\n"
        "def g():\n"
        "    raise ConfigError('run `saliency fetch-data ecssd --from DIR`, or pass `source`')\n")
    assert _messages_with_flags(tmp_path, ["saliency"]) == ["saliency/bad.py:2: --val-count"]


def test_a_run_refused_deep_in_the_library_names_the_flags(tmp_path):
    """The plateau rule is checked by the discovery loop's settings (fields plateau_change,
    rca_every, plateau_window); the command line reads the flags the user typed."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "discover", "--out", str(tmp_path / "run"),
                             "--stop-rca-change", "0.1", "--steps", "5", "--resolution", "32", "--device", "cpu"],
                            capture_output=True, text=True, cwd=REPO)
    assert_one_line_error(result, "--stop-rca-change needs --rca-every, and a --stop-rca-window of at least one "
                                  "--rca-every")
    assert flag_names(None)["plateau_window"] == "--stop-rca-window"
