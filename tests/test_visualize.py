"""tf_rcnn.visualize: boxes change border pixels only, masks blend at alpha 0.4, grids tile."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tf_rcnn.visualize import MASK_ALPHA, class_color, draw_detections, draw_grid, save_image


def _gray(h=80, w=100) -> np.ndarray:
    return np.full([h, w, 3], 100, np.uint8)


def test_box_border_changes_and_far_pixels_stay():
    image = _gray()
    out = draw_detections(image, [[40, 30, 70, 80]], [1], [0.93], ["cat"])
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(image, _gray())  # input untouched
    # Left border column x = 30 at mid-height is the class colour; the box centre and a far
    # corner are unchanged (the label sits above the box, at y < 40).
    np.testing.assert_array_equal(out[55, 30], class_color(1))
    np.testing.assert_array_equal(out[55, 55], image[55, 55])
    np.testing.assert_array_equal(out[78, 2], image[78, 2])
    # The label background is drawn just above the box's top-left corner.
    assert not np.array_equal(out[36, 32], image[36, 32])


def test_threshold_background_and_zero_detections():
    image = _gray()
    low = draw_detections(image, [[10, 10, 50, 50]], [1], [0.2], None, score_threshold=0.5)
    background = draw_detections(image, [[10, 10, 50, 50]], [0], [0.9])
    empty = draw_detections(image, np.zeros([0, 4]), np.zeros([0], int), np.zeros([0]))
    for out in (low, background, empty):
        np.testing.assert_array_equal(out, image)


def test_mask_overlay_blends_at_alpha():
    image = _gray()
    mask = np.zeros([1, 80, 100], np.uint8)
    mask[0, 50:60, 40:60] = 1
    out = draw_detections(image, [[45, 35, 65, 65]], [2], [0.9], {2: "dog"}, masks=mask)
    # Inside the mask, away from the outline: 0.6 * 100 + 0.4 * colour, rounded.
    expected = np.round((1 - MASK_ALPHA) * 100 + MASK_ALPHA * np.array(class_color(2)))
    np.testing.assert_array_equal(out[55, 50], expected.astype(np.uint8))
    np.testing.assert_array_equal(out[5, 95], image[5, 95])  # outside mask and box
    with pytest.raises(ValueError, match="masks"):
        draw_detections(image, [[0, 0, 1, 1]], [1], [1.0], masks=np.zeros([1, 10, 10]))


def test_distinct_colours_and_bad_image():
    colours = {class_color(c) for c in range(1, 21)}
    assert len(colours) == 20
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(np.zeros([4, 4, 3], np.float32), [], [], [])


def test_grid_and_save(tmp_path):
    a = np.zeros([10, 20, 3], np.uint8)
    b = np.full([30, 5, 3], 7, np.uint8)
    grid = draw_grid([a, b, a], columns=2, padding=2)
    # 2 rows x 2 columns of 30 x 20 cells with 2-pixel padding: H = 2*32+2, W = 2*22+2.
    assert grid.shape == (66, 46, 3)
    np.testing.assert_array_equal(grid[2:12, 2:22], a)  # cell (0, 0)
    np.testing.assert_array_equal(grid[2:32, 24:29], b)  # cell (0, 1)
    np.testing.assert_array_equal(grid[34:44, 2:22], a)  # cell (1, 0)
    assert (grid[0] == 255).all() and (grid[40:, 30:] == 255).all()  # padding, empty cell
    path = tmp_path / "grid.png"
    save_image(str(path), grid)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), grid)
