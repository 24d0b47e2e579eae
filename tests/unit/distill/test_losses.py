import math

import torch

from compress.distill.losses import info_nce, kd_loss, linear_cka, pixel_info_nce


def test_kd_loss_zero_iff_equal_and_temperature_scaled():
    z = torch.randn(8, 10)
    assert float(kd_loss(z, z, 4.0)) < 1e-6
    other = torch.randn(8, 10)
    assert float(kd_loss(z, other, 1.0)) > 0.01
    # T^2 scaling: for large T the scaled KL approaches the MSE of centred logits / 2 (per class sum)
    t = 100.0
    zc, oc = z - z.mean(1, keepdim=True), other - other.mean(1, keepdim=True)
    approx = ((zc - oc) ** 2).sum(1).mean() / (2 * z.shape[1])
    assert math.isclose(float(kd_loss(z, other, t)), float(approx), rel_tol=0.05)


def test_cka_identity_orthogonal_and_scale_invariance():
    torch.manual_seed(0)
    x = torch.randn(32, 16)
    assert math.isclose(float(linear_cka(x, x)), 1.0, rel_tol=1e-5)
    q, _ = torch.linalg.qr(torch.randn(16, 16))
    assert math.isclose(float(linear_cka(x, 3.7 * x @ q)), 1.0, rel_tol=1e-4)
    assert float(linear_cka(x, torch.randn(32, 16))) < 0.8
    # feature maps are flattened per sample
    assert math.isclose(float(linear_cka(x.view(32, 4, 2, 2), x)), 1.0, rel_tol=1e-5)


def test_info_nce_prefers_aligned_pairs():
    torch.manual_seed(0)
    t = torch.randn(16, 8)
    s = t + 0.1 * torch.randn(16, 8)
    aligned = info_nce(s, t, 0.1)
    shuffled = info_nce(s[torch.randperm(16)], t, 0.1)
    assert float(aligned) < 0.5 < float(shuffled)
    # batched form [R, N, D] equals the mean of the per-region losses
    s2, t2 = torch.randn(3, 16, 8), torch.randn(3, 16, 8)
    per = torch.stack([info_nce(s2[i], t2[i], 0.5) for i in range(3)]).mean()
    assert torch.allclose(info_nce(s2, t2, 0.5), per, atol=1e-6)


def test_pixel_info_nce_aligned_beats_shifted():
    torch.manual_seed(0)
    t = torch.randn(2, 8, 6, 6)
    queue = torch.randn(32, 8)
    aligned = pixel_info_nce(t.clone(), t, queue, 0.2)
    shifted = pixel_info_nce(torch.roll(t, 1, dims=3), t, queue, 0.2)
    assert float(aligned) < float(shifted)
    assert float(pixel_info_nce(t, t, None)) == 0.0
