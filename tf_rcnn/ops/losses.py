"""Detection losses: RPN objectness and box terms, R-CNN classification and box terms, the
Mask R-CNN mask term, and per-RoI losses (for OHEM). The loss NAMES are declared here once.

Conventions:
    Sampled-label tensors use 1 positive, 0 negative, -1 not sampled (RPN), and class ids
    0..K with -1 for padding (R-CNN). Box targets are encoded deltas ``(dy, dx, dh, dw)``.

Normalisation (Detectron):
    RPN objectness: mean binary cross-entropy over the sampled anchors.
    RPN box: smooth-L1 (beta 1/9) summed over positive anchors, divided by the number of sampled
        anchors (``batch_size_per_image * B``) so that a batch with few positives does not get a
        larger box loss per anchor.
    R-CNN class: mean softmax cross-entropy over the sampled RoIs.
    R-CNN box: smooth-L1 (beta 1) on the deltas of the GT class only, summed over foreground
        RoIs and divided by the number of sampled RoIs.

Every loss is a mean over this replica's batch. Under ``tf.distribute`` the trainer scales by
``1 / num_replicas_in_sync`` so that summed gradients equal the global-batch mean.

    Mask: per-pixel sigmoid cross-entropy on the GT class's channel, mean over the pixels of a
        positive RoI, averaged over the positives (Mask R-CNN Sec. 3).

Shape shorthand: B batch, N anchors, R sampled RoIs per image, K classes, Q mask RoIs per
image, Sm mask resolution.
"""

from __future__ import annotations

import tensorflow as tf

# The loss terms every part reports, by name (training logs, TensorBoard, loss_terms of the
# 4-step schedule and the model's ``loss_names`` all use these).
RPN_LOSS_NAMES = ("rpn_objectness_loss", "rpn_box_loss")
RCNN_LOSS_NAMES = ("rcnn_class_loss", "rcnn_box_loss")
MASK_LOSS_NAME = "mask_loss"
TOTAL_LOSS_NAME = "total_loss"


def cascade_loss_names(num_stages: int) -> tuple[str, ...]:
    """Cascade R-CNN's per-stage R-CNN loss names: ``rcnn_class_loss_stage1``,
    ``rcnn_box_loss_stage1``, ... for stages 1..``num_stages``."""
    return tuple(f"{name}_stage{t}" for t in range(1, int(num_stages) + 1)
                 for name in RCNN_LOSS_NAMES)


def smooth_l1(pred: tf.Tensor, target: tf.Tensor, beta: float) -> tf.Tensor:
    """Elementwise smooth-L1: ``0.5 x^2 / beta`` for ``|x| < beta``, else ``|x| - 0.5 beta``.

    ``beta == 0`` is plain L1.
    """
    diff = tf.abs(tf.cast(pred, tf.float32) - tf.cast(target, tf.float32))
    if beta <= 0.0:
        return diff
    return tf.where(diff < beta, 0.5 * tf.square(diff) / beta, diff - 0.5 * beta)


def sigmoid_focal_loss(
    labels: tf.Tensor, logits: tf.Tensor, gamma: float = 2.0, alpha: float = 0.25
) -> tf.Tensor:
    """Elementwise binary focal loss (Lin et al. 2017): ``-a_t (1 - p_t)^gamma log(p_t)``.

    Args:
        labels: float tensor of 0/1 targets.
        logits: same shape, raw scores.
    """
    labels = tf.cast(labels, tf.float32)
    logits = tf.cast(logits, tf.float32)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    p = tf.sigmoid(logits)
    p_t = labels * p + (1.0 - labels) * (1.0 - p)
    alpha_t = labels * alpha + (1.0 - labels) * (1.0 - alpha)
    return alpha_t * tf.pow(1.0 - p_t, gamma) * ce


def softmax_focal_loss(labels: tf.Tensor, logits: tf.Tensor, gamma: float = 2.0) -> tf.Tensor:
    """Per-example softmax focal loss ``-(1 - p_y)^gamma log(p_y)`` (Detectron's softmax focal
    loss for multi-class heads). ``labels [...]`` int class ids, ``logits [..., K+1]``."""
    logits = tf.cast(logits, tf.float32)
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    log_p_y = tf.gather(log_probs, tf.cast(labels, tf.int32), axis=-1, batch_dims=labels.shape.rank)
    return -tf.pow(1.0 - tf.exp(log_p_y), gamma) * log_p_y


def rpn_losses(
    objectness_logits: tf.Tensor,
    pred_deltas: tf.Tensor,
    labels: tf.Tensor,
    box_targets: tf.Tensor,
    batch_size_per_image: int,
    box_beta: float = 1.0 / 9.0,
    focal_gamma: float | None = None,
    focal_alpha: float = 0.25,
) -> dict[str, tf.Tensor]:
    """RPN objectness and box losses.

    Args:
        objectness_logits: ``[B, N]`` float logits.
        pred_deltas: ``[B, N, 4]`` predicted deltas (RPN weights).
        labels: ``[B, N]`` int32; 1 sampled positive, 0 sampled negative, -1 not sampled.
        box_targets: ``[B, N, 4]`` encoded targets of each anchor's matched GT.
        batch_size_per_image: anchors sampled per image (256); the box loss normaliser.
        box_beta: smooth-L1 beta (1/9 as in Detectron).
        focal_gamma: use sigmoid focal loss with this gamma instead of cross-entropy.
        focal_alpha: focal loss alpha.

    Returns:
        ``{"rpn_objectness_loss": scalar, "rpn_box_loss": scalar}``.
    """
    labels = tf.cast(labels, tf.int32)
    sampled = tf.cast(labels >= 0, tf.float32)
    positive = tf.cast(labels == 1, tf.float32)
    objectness_logits = tf.cast(objectness_logits, tf.float32)
    if focal_gamma is None:
        cls = tf.nn.sigmoid_cross_entropy_with_logits(labels=positive, logits=objectness_logits)
    else:
        cls = sigmoid_focal_loss(positive, objectness_logits, focal_gamma, focal_alpha)
    num_sampled = tf.maximum(tf.reduce_sum(sampled), 1.0)
    objectness_loss = tf.reduce_sum(cls * sampled) / num_sampled

    box = tf.reduce_sum(smooth_l1(pred_deltas, box_targets, box_beta), axis=-1)
    batch = tf.cast(tf.shape(labels)[0], tf.float32)
    box_loss = tf.reduce_sum(box * positive) / tf.maximum(batch * batch_size_per_image, 1.0)
    return dict(zip(RPN_LOSS_NAMES, (objectness_loss, box_loss), strict=True))


def rcnn_losses(
    class_logits: tf.Tensor,
    pred_deltas: tf.Tensor,
    labels: tf.Tensor,
    box_targets: tf.Tensor,
    valid: tf.Tensor,
    box_beta: float = 1.0,
    focal_gamma: float | None = None,
) -> dict[str, tf.Tensor]:
    """R-CNN head losses on sampled RoIs.

    Args:
        class_logits: ``[B, R, K+1]``.
        pred_deltas: ``[B, R, K+1, 4]`` class-specific, or ``[B, R, 1, 4]`` class-agnostic.
        labels: ``[B, R]`` int32 class ids (0 background); ignored where ``valid`` is False.
        box_targets: ``[B, R, 4]`` encoded targets (R-CNN weights) of the matched GT.
        valid: ``[B, R]`` bool, the sampled (non-padding) RoIs.
        box_beta: smooth-L1 beta (1.0 as in Detectron).
        focal_gamma: use softmax focal loss with this gamma instead of cross-entropy.

    Returns:
        ``{"rcnn_class_loss": scalar, "rcnn_box_loss": scalar}``.
    """
    labels = tf.maximum(tf.cast(labels, tf.int32), 0)
    validf = tf.cast(valid, tf.float32)
    class_logits = tf.cast(class_logits, tf.float32)
    if focal_gamma is None:
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=class_logits)
    else:
        ce = softmax_focal_loss(labels, class_logits, focal_gamma)
    num_valid = tf.maximum(tf.reduce_sum(validf), 1.0)
    class_loss = tf.reduce_sum(ce * validf) / num_valid

    foreground = validf * tf.cast(labels > 0, tf.float32)
    box = tf.reduce_sum(
        smooth_l1(deltas_of_class(pred_deltas, labels), box_targets, box_beta), axis=-1)
    box_loss = tf.reduce_sum(box * foreground) / num_valid
    return dict(zip(RCNN_LOSS_NAMES, (class_loss, box_loss), strict=True))


def deltas_of_class(pred_deltas: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Each RoI's deltas for its label: ``[B, R, K+1|1, 4]`` -> ``[B, R, 4]``.

    Class-agnostic deltas (one group) are returned as they are; ``labels`` must be >= 0.
    """
    pred_deltas = tf.cast(pred_deltas, tf.float32)
    if pred_deltas.shape[-2] == 1:
        return pred_deltas[..., 0, :]
    # [B, R, K+1, 4] -> [B, R, 4]: the deltas predicted for each RoI's class.
    return tf.gather(pred_deltas, labels, axis=2, batch_dims=2)


def rcnn_per_roi_losses(
    class_logits: tf.Tensor,
    pred_deltas: tf.Tensor,
    labels: tf.Tensor,
    box_targets: tf.Tensor,
    box_beta: float = 1.0,
) -> tf.Tensor:
    """Each RoI's own loss: softmax cross-entropy + smooth-L1 summed over the 4 deltas
    (foreground only); OHEM ranks RoIs by it.

    Args:
        class_logits: ``[B, N, K+1]``.
        pred_deltas: ``[B, N, 1, 4]`` class-agnostic or ``[B, N, K+1, 4]``.
        labels: ``[B, N]`` int32; -1 rows are treated as background (mask them yourself).
        box_targets: ``[B, N, 4]`` encoded targets.
        box_beta: smooth-L1 beta.

    Returns:
        ``[B, N]`` float32 losses.
    """
    labels = tf.maximum(tf.cast(labels, tf.int32), 0)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=tf.cast(class_logits, tf.float32))
    box = tf.reduce_sum(
        smooth_l1(deltas_of_class(pred_deltas, labels), box_targets, box_beta), axis=-1)
    return ce + box * tf.cast(labels > 0, tf.float32)


def mask_loss(mask_logits: tf.Tensor, mask_targets: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Mask R-CNN's binary mask loss: per-pixel sigmoid cross-entropy, mean over pixels,
    weighted mean over RoIs.

    Args:
        mask_logits: ``[B, Q, Sm, Sm]`` float logits of each RoI's GT-class channel.
        mask_targets: ``[B, Q, Sm, Sm]`` float32 in {0, 1}.
        weights: ``[B, Q]`` float32, 1 for positive RoIs and 0 for the rest.

    Returns:
        Scalar float32: ``sum_r w_r * mean_pixels(BCE_r) / max(sum_r w_r, 1)``; 0 without
        positives.
    """
    bce = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.cast(mask_targets, tf.float32), logits=tf.cast(mask_logits, tf.float32)
    )
    per_roi = tf.reduce_mean(bce, axis=[2, 3])  # [B, Q]
    weights = tf.cast(weights, tf.float32)
    return tf.reduce_sum(per_roi * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
