import cv2
import pytest
from sr_test_images import smooth_image


@pytest.fixture
def hr_folder(tmp_path):
    """A benchmark-layout folder with HR images only (odd sizes included)."""
    root = tmp_path / "Set3"
    (root / "HR").mkdir(parents=True)
    for i, (h, w) in enumerate([(48, 64), (51, 67), (64, 64)]):
        cv2.imwrite(str(root / "HR" / f"img{i}.png"), smooth_image(h, w, seed=i))
    return root
