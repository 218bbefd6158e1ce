"""The `paper` profile is the reference code's experiment, value for value (docs/profiles.md)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from pipelines.discover import PROFILES as DISCOVERY_PROFILES
from pipelines.pipeline import PROFILES as PIPELINE_PROFILES
from pipelines.synthesize import background_column
from pipelines.train_unet import PROFILES as UNET_PROFILES
from saliency.core.errors import UserError
from saliency.plain_unet import PlainUNet
from saliency.synthesis import AREA_ABOVE, AREA_BELOW, KEPT, MaskRule, judge
from saliency.unet import PLAIN_ARCHITECTURE, build_unet


def test_the_paper_profile_holds_the_references_values():
    pipeline = PIPELINE_PROFILES["paper"]
    assert (pipeline.generator, pipeline.unet_profile, pipeline.eval_protocol) == ("biggan-128", "paper", "paper")
    assert (pipeline.shift, pipeline.bg_vector, pipeline.strict_area, pipeline.refine_bg) == (26.0, "column", True, False)
    discovery = DISCOVERY_PROFILES[pipeline.generator]  # the paper's BigGAN game (section 4)
    assert (discovery.deformator, discovery.num_directions, discovery.reconstructor) == ("ortho", 120, "resnet18")
    assert (discovery.batch_size, discovery.steps, discovery.lr) == (32, 100_000, 1e-4)
    unet = UNET_PROFILES["paper"]
    assert unet.architecture == PLAIN_ARCHITECTURE and unet.architecture.encoder_weights is None
    settings = unet.settings
    assert (settings.steps, settings.batch_size, settings.lr, settings.lr_step, settings.lr_gamma) == (
        15000, 128, 0.005, 4000, 0.2)
    assert settings.temperature == 10.0 and not settings.freeze_encoder and not settings.augment.enabled
    assert (MaskRule.threshold, MaskRule.min_area, MaskRule.max_area) == (0.95, 0.05, 0.5)


def test_the_plain_unet_has_the_references_shape():
    """64-128-256-512-512 down, 256-128-64-64 up, two classes; upsampling pads to the skip, so
    any size goes through and comes back at that size."""
    model = build_unet(PLAIN_ARCHITECTURE)
    assert isinstance(model, PlainUNet)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512, 512, 512,
                                               256, 256, 128, 128, 64, 64, 64, 64, 2]
    assert [c.in_channels for c in convs if c.kernel_size == (3, 3)][10::2] == [1024, 512, 256, 128]
    assert sum(p.numel() for p in model.parameters()) == 13_395_394
    model.eval()
    with torch.no_grad():
        for height, width in ((32, 32), (37, 51)):
            assert model(torch.randn(1, 3, height, width)).shape == (1, 2, height, width)


def test_strict_area_bounds_drop_the_bounds_themselves():
    """Masks of area exactly 0.05 and 0.5 are kept by default and dropped by the reference's rule."""
    shifted = torch.ones(3, 3, 20, 20)  # white: no mask
    shifted[0, :, :2, :10] = 0  # 20 of 400 pixels: area 0.05
    shifted[1, :, :10, :] = 0  # area 0.5
    shifted[2, :, :5, :] = 0  # area 0.25
    assert judge(shifted, MaskRule()).reasons.tolist() == [KEPT, KEPT, KEPT]
    assert judge(shifted, MaskRule(strict_area=True)).reasons.tolist() == [AREA_BELOW, AREA_ABOVE, KEPT]
    assert MaskRule().fingerprint()["strict_area"] is False and MaskRule(strict_area=True).fingerprint()["strict_area"]


def test_the_column_of_a_refined_h_bg_is_its_starting_column_signed_like_it(tmp_path):
    directions = torch.zeros(4, 3)
    directions[:, 2] = torch.tensor([0.0, 2.0, 0.0, 0.0])  # not unit: the column is normalised
    directions[:, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    save_file({"directions": directions}, str(tmp_path / "directions.safetensors"))
    refined = torch.tensor([0.1, -0.9, 0.0, 0.1])
    summary = {"bg_direction": {"index": "refined", "sign": -1, "extra": {"start": 2}}}
    assert torch.equal(background_column(tmp_path, summary, refined), torch.tensor([0.0, -1.0, 0.0, 0.0]))
    column = {"bg_direction": {"index": 0, "sign": 1}}
    assert torch.equal(background_column(tmp_path, column, directions[:, 0]), directions[:, 0])
    with pytest.raises(UserError, match="no column"):
        background_column(tmp_path, {"bg_direction": {"index": 7}}, refined)
    with pytest.raises(UserError, match="names no column"):
        background_column(tmp_path, {"bg_direction": {"index": "refined"}}, refined)
    (tmp_path / "directions.safetensors").write_text(json.dumps({}))
    with pytest.raises(UserError, match="corrupted"):
        background_column(tmp_path, summary, refined)
