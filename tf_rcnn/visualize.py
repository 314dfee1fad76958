"""Drawing detections on images with PIL: boxes, "name score" labels, translucent masks.

Conventions:
    Images are uint8 ``[H, W, 3]`` RGB. Boxes are ``[y1, x1, y2, x2]`` in pixels of that image
    (for results in original-image pixels, draw on the original image). Classes are ``1..K``
    (0, background, is never drawn); one colour per class, the same in every picture.

Shape shorthand:
    D detections, H/W image height/width.

``class_names`` is a dict ``{class_id: name}`` or a sequence whose item ``i`` names class
``i + 1`` (no background entry); a class without a name is labelled with its id.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MASK_ALPHA = 0.4
_GOLDEN_RATIO_CONJUGATE = 0.618033988749895


def class_color(class_id: int) -> tuple[int, int, int]:
    """A saturated RGB colour for a class; neighbouring ids get far-apart hues."""
    # Stepping the hue by the golden ratio spreads any number of classes around the wheel.
    hue = (int(class_id) * _GOLDEN_RATIO_CONJUGATE) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _class_name(class_names: Mapping[int, str] | Sequence[str] | None, class_id: int) -> str:
    if isinstance(class_names, Mapping):
        return str(class_names.get(class_id, class_id))
    if class_names is not None and 1 <= class_id <= len(class_names):
        return str(class_names[class_id - 1])
    return str(class_id)


def _check_image(image: np.ndarray, argument: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{argument} must be [H, W, 3] RGB; got shape {image.shape}.")
    if image.dtype != np.uint8:
        raise ValueError(
            f"{argument} must be uint8; got {image.dtype}. Convert with "
            "np.clip(x, 0, 255).astype(np.uint8) (undo any normalisation first)."
        )
    return image


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    masks: np.ndarray | None = None,
    score_threshold: float = 0.5,
    line_width: int = 2,
) -> np.ndarray:
    """Draws detections whose score is >= ``score_threshold`` on a copy of ``image``.

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        boxes: ``[D, 4]`` float, ``[y1, x1, y2, x2]`` pixels of ``image``.
        classes: ``[D]`` int, ``1..K``; class 0 (background/padding) is skipped.
        scores: ``[D]`` float.
        class_names: ``{class_id: name}`` or a sequence naming classes ``1..K``.
        masks: Optional ``[D, H, W]`` full-image masks (values > 0.5 are foreground), blended
            in the class colour with alpha 0.4.
        score_threshold: Minimum score drawn.
        line_width: Box outline width in pixels.

    Returns:
        ``[H, W, 3]`` uint8, a new array (the input is not modified).
    """
    image = _check_image(image)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes).astype(np.int64).reshape(-1)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if not boxes.shape[0] == classes.shape[0] == scores.shape[0]:
        raise ValueError(
            f"boxes [D, 4], classes [D] and scores [D] disagree on D: {boxes.shape}, "
            f"{classes.shape}, {scores.shape}."
        )
    keep = np.flatnonzero((scores >= score_threshold) & (classes >= 1))
    height, width = image.shape[:2]
    canvas = image.astype(np.float32)
    if masks is not None:
        masks = np.asarray(masks)
        if (
            masks.ndim != 3
            or masks.shape[0] != boxes.shape[0]
            or masks.shape[1:]
            != (
                height,
                width,
            )
        ):
            raise ValueError(
                f"masks must be [D, H, W] = {(boxes.shape[0], height, width)} full-image masks; "
                f"got {masks.shape}. Paste RoI masks into the image first."
            )
        for d in keep:
            on = masks[d] > 0.5
            color = np.asarray(class_color(classes[d]), np.float32)
            canvas[on] = (1.0 - MASK_ALPHA) * canvas[on] + MASK_ALPHA * color
    pil = Image.fromarray(np.clip(np.round(canvas), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default()
    for d in keep:
        y1, x1, y2, x2 = boxes[d]
        color = class_color(classes[d])
        draw.rectangle([x1, y1, x2, y2], outline=color, width=line_width)
        label = f"{_class_name(class_names, int(classes[d]))} {scores[d]:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        text_w, text_h = right - left, bottom - top
        # Label above the box when it fits, otherwise just inside its top edge.
        ty = y1 - text_h - 2 if y1 - text_h - 2 >= 0 else y1
        tx = min(max(x1, 0), max(width - text_w - 2, 0))
        draw.rectangle([tx, ty, tx + text_w + 2, ty + text_h + 2], fill=color)
        # Black text on light colours, white on dark ones (ITU-R BT.601 luma).
        luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        text_color = (0, 0, 0) if luma > 150 else (255, 255, 255)
        draw.text((tx + 1 - left, ty + 1 - top), label, fill=text_color, font=font)
    return np.asarray(pil, np.uint8).copy()


def save_image(path: str, image: np.ndarray) -> None:
    """Writes a uint8 ``[H, W, 3]`` image; the format follows the extension (PNG, JPEG...)."""
    Image.fromarray(_check_image(image)).save(path)


def draw_grid(
    images: Sequence[np.ndarray], columns: int | None = None, padding: int = 4
) -> np.ndarray:
    """Tiles images (of any sizes) row-major into one uint8 picture on a white background.

    Args:
        images: uint8 ``[H_i, W_i, 3]`` images.
        columns: Images per row (default ``ceil(sqrt(n))``).
        padding: White pixels between and around cells.

    Returns:
        ``[rows * (Hmax + padding) + padding, columns * (Wmax + padding) + padding, 3]`` uint8;
        each image sits at the top-left of its ``Hmax x Wmax`` cell.
    """
    if not images:
        raise ValueError("draw_grid needs at least one image.")
    images = [_check_image(im, f"images[{i}]") for i, im in enumerate(images)]
    n = len(images)
    columns = int(np.ceil(np.sqrt(n))) if columns is None else int(columns)
    if columns < 1:
        raise ValueError(f"columns must be >= 1; got {columns}.")
    rows = int(np.ceil(n / columns))
    cell_h = max(im.shape[0] for im in images)
    cell_w = max(im.shape[1] for im in images)
    grid = np.full(
        [rows * (cell_h + padding) + padding, columns * (cell_w + padding) + padding, 3],
        255,
        np.uint8,
    )
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        top, left = padding + r * (cell_h + padding), padding + c * (cell_w + padding)
        grid[top : top + im.shape[0], left : left + im.shape[1]] = im
    return grid


def upscale_for_drawing(image: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None = None,
                        min_side: int = 384) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Enlarges small images by an integer factor (nearest neighbour) so labels stay legible;
    boxes ``[D, 4]`` and full-image masks ``[D, H, W]`` follow."""
    factor = max(1, -(-min_side // max(image.shape[:2])))
    if factor == 1:
        return image, boxes, masks
    image = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
    if masks is not None:
        masks = np.repeat(np.repeat(masks, factor, axis=1), factor, axis=2)
    return image, np.asarray(boxes, np.float32) * factor, masks
