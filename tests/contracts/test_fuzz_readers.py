"""A short, seeded fuzz run over every reader of outside data (tests/support/fuzz_targets.py):
mutated images of six formats and masks, run-folder JSON, safetensors checkpoints and shards,
zip archives, PyTorch weights files, the TFLite MobileNetV2 (where ../shared has it), run
folders of the paper's reference code, and every command-line option's text. Each input must give a value or the project's one-line
error, in bounded time, writing nothing outside its folder. benchmarks/fuzz_readers.py runs
the same targets for as long as asked."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from fuzz_targets import FAMILIES, check, inputs

EXAMPLES = {"images": 60, "json": 80, "safetensors": 60, "zip": 60, "pth": 40, "tflite": 20, "reference-runs": 40,
            "cli": 30}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_reader_gives_a_value_or_one_line(name, tmp_path_factory):
    family = FAMILIES[name]
    if not family.seeds():
        pytest.skip(f"{name}: its seeds are real files this clone does not have beside it (../shared)")
    strategy = inputs(family)
    counter = iter(range(10**9))

    @settings(max_examples=EXAMPLES[name], derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(data: bytes) -> None:
        check(family, data, tmp_path_factory.mktemp(name) / f"case-{next(counter)}")

    run()
