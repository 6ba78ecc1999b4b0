import cv2
import numpy as np
import pytest
import torch
import torchmetrics
from sr_test_images import smooth_image

from metamixer.superres import FFNetSR
from metamixer.superres.data import PairedImages, bicubic_downscale, ensure_lr, read_image
from metamixer.superres.inference import psnr_ssim_y, receptive_radius, upscale


def test_missing_lr_folder_is_generated_with_matlab_bicubic(hr_folder):
    ensure_lr(hr_folder, 2)
    lr = read_image(hr_folder / "LR_bicubic" / "X2" / "img1x2.png")
    hr = read_image(hr_folder / "HR" / "img1.png")[:50, :66]  # cropped to a multiple of 2
    assert lr.shape == (25, 33, 3)
    expected = np.round(bicubic_downscale(hr, 2) * 255) / 255
    np.testing.assert_allclose(lr, expected, atol=1 / 255 + 1e-6)
    pairs = PairedImages(hr_folder, 2)
    assert pairs[1]["hr"].shape == (3, 50, 66)  # mod-crop of a 51×67 image


def test_runs_started_together_on_a_fresh_dataset_both_get_the_lr_folder(hr_folder, monkeypatch):
    """A second run arriving while the first is halfway through generating the LR folder (as two
    sweep cells started at once) neither fails nor sees a partial folder."""
    import metamixer.superres.data as data

    original, calls = data.bicubic_downscale, []

    def downscale_then_race(image, scale):
        calls.append(1)
        if len(calls) == 2:  # the first LR file is written: the other run starts now
            monkeypatch.setattr(data, "bicubic_downscale", original)
            ensure_lr(hr_folder, 2)
        return original(image, scale)

    monkeypatch.setattr(data, "bicubic_downscale", downscale_then_race)
    ensure_lr(hr_folder, 2)
    lr_dir = hr_folder / "LR_bicubic" / "X2"
    assert sorted(p.name for p in lr_dir.iterdir()) == sorted(
        f"{p.stem}x2.png" for p in (hr_folder / "HR").iterdir()
    )
    assert [p.name for p in lr_dir.parent.iterdir()] == ["X2"]  # no staging folder left behind
    assert PairedImages(hr_folder, 2)[0]["lr"].shape[0] == 3


def matlab_bicubic_1d(v: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB's ``imresize(v, scale, 'bicubic')`` along axis 0 for scale < 1, written from its
    definition: Keys' cubic (a = -0.5) widened by 1 / scale (antialiasing), weights normalised,
    symmetric padding at the borders."""

    def cubic(x):
        a = np.abs(x)
        return np.where(
            a <= 1,
            1.5 * a**3 - 2.5 * a**2 + 1,
            np.where(a <= 2, -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2, 0),
        )

    n = v.shape[0]
    rows = []
    for i in range(1, int(np.ceil(n * scale)) + 1):
        centre = i / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate
        taps = np.arange(np.floor(centre - 2 / scale), np.ceil(centre + 2 / scale) + 1)
        w = scale * cubic(scale * (centre - taps))
        w /= w.sum()
        j = taps.astype(int) - 1
        j = np.where(j < 0, -j - 1, np.where(j >= n, 2 * n - j - 1, j))
        rows.append(np.tensordot(w, v[j], axes=1))
    return np.stack(rows)


def test_bicubic_downscale_is_matlabs_imresize():
    hr = np.random.default_rng(0).random((20, 26, 3))
    expected = matlab_bicubic_1d(matlab_bicubic_1d(hr, 0.5).swapaxes(0, 1), 0.5).swapaxes(0, 1)
    np.testing.assert_allclose(bicubic_downscale(hr, 2), np.clip(expected, 0, 1), atol=1e-5)


def test_missing_lr_file_names_it(hr_folder):
    ensure_lr(hr_folder, 2)
    (hr_folder / "LR_bicubic" / "X2" / "img2x2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"img2x2\.png"):
        ensure_lr(hr_folder, 2)


def test_corrupt_image_names_the_file(hr_folder):
    (hr_folder / "HR" / "img0.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"img0\.png"):
        read_image(hr_folder / "HR" / "img0.png")


def test_grey_rgba_and_16_bit_images_become_rgb(tmp_path):
    grey = smooth_image(8, 8, channels=1)[..., 0]
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    rgba = np.dstack([smooth_image(8, 8), np.full((8, 8), 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    deep = smooth_image(8, 8).astype(np.uint16) * 257 + 3
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    g, a, d = (read_image(tmp_path / f"{n}.png") for n in "gad")
    assert g.shape == a.shape == d.shape == (8, 8, 3)
    np.testing.assert_allclose(g[..., 0], g[..., 2])
    np.testing.assert_allclose(a, rgba[..., 2::-1] / 255, atol=1e-6)  # alpha dropped, BGR -> RGB
    np.testing.assert_allclose(d, deep[..., ::-1] / 65535, atol=1e-6)  # 16-bit precision kept


def test_tiled_inference_equals_whole_image():
    torch.manual_seed(0)
    model = FFNetSR(scale=2, dim=8, depth=2).eval()
    lr = torch.rand(1, 3, 50, 70)
    assert receptive_radius(model) == 1 + 2 * 3 + 1
    with torch.no_grad():
        whole = model(lr)
        tiled = upscale(model, lr, 2, tile=16)
    torch.testing.assert_close(tiled, whole, atol=1e-4, rtol=0)


def test_small_halo_blends_without_seams():
    torch.manual_seed(0)
    model = FFNetSR(scale=2, dim=8, depth=2).eval()
    lr = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        approx = upscale(model, lr, 2, tile=16, overlap=4, halo=0)
        whole = model(lr)
    assert (approx - whole).abs().max() < 0.2 and torch.isfinite(approx).all()


def test_metrics_crop_the_border_and_quantise_to_8_bit():
    hr = torch.from_numpy(smooth_image(24, 30)).permute(2, 0, 1).float() / 255
    border = hr.clone()
    border[:, :2], border[:, :, -2:] = 1 - border[:, :2], 1 - border[:, :, -2:]
    assert psnr_ssim_y(border, hr, crop_border=2)[0] == float("inf")
    assert psnr_ssim_y(border, hr, crop_border=1)[0] < 40
    below_half_a_level = (hr - 0.4 / 255).clamp(0, 1)  # rounds back to the same 8-bit image
    assert psnr_ssim_y(below_half_a_level, hr, crop_border=2) == (float("inf"), 1.0)


def test_psnr_ssim_agree_with_torchmetrics_on_the_y_channel():
    torch.manual_seed(0)
    hr = torch.from_numpy(smooth_image(40, 48)).permute(2, 0, 1).float() / 255
    sr = (hr + 0.03 * torch.randn_like(hr)).clamp(0, 1)
    psnr, ssim = psnr_ssim_y(sr, hr, crop_border=2)

    def y(img):  # 8-bit quantisation, then BT.601 luma in [16, 235]
        q = (img * 255).round() / 255
        return (16 + 65.481 * q[0] + 128.553 * q[1] + 24.966 * q[2])[None, None, 2:-2, 2:-2]

    ref_psnr = torchmetrics.functional.peak_signal_noise_ratio(y(sr), y(hr), data_range=255.0)
    assert psnr == pytest.approx(float(ref_psnr), abs=0.02)
    ref_ssim = torchmetrics.functional.structural_similarity_index_measure(
        y(sr).double(),
        y(hr).double(),
        data_range=255.0,
        gaussian_kernel=True,
        sigma=1.5,
        kernel_size=11,
    )
    assert ssim == pytest.approx(float(ref_ssim), abs=0.01)
