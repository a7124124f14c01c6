"""The replacement decoys of :mod:`dance.baselines` against the libraries that define their fills."""
from __future__ import annotations

import pytest
import torch

from dance.baselines import replacement_decoys


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 3.3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blur_fill_is_torchvisions_gaussian_blur(sigma, dtype):
    """The blur written out in the library (torchvision is not its dependency) is torchvision's
    ``gaussian_blur`` with kernel radius round(3 sigma), pasted into each mask."""
    tvf = pytest.importorskip("torchvision.transforms.functional")
    x = torch.rand(1, 3, 40, 37, generator=torch.Generator().manual_seed(0)).to(dtype)
    masks = torch.zeros(2, 1, 40, 37, dtype=torch.bool)
    masks[0, :, :20] = True
    masks[1, :, 20:] = True
    d = replacement_decoys(x, masks, "blur", sigma=sigma)
    radius = max(1, round(3 * sigma))
    blurred = tvf.gaussian_blur(x, [2 * radius + 1] * 2, [sigma, sigma])
    expected = torch.where(masks, blurred, x)
    assert float((d.images - expected).abs().max()) <= (1e-6 if dtype == torch.float32 else 1e-12)
    assert torch.equal(d.images[~masks.expand_as(d.images)], x.expand_as(d.images)[~masks.expand_as(d.images)])
