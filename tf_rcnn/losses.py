"""Detection losses: RPN objectness and box terms, R-CNN classification and box terms.

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

Shape shorthand: B batch, N anchors, R sampled RoIs per image, K classes.
"""

from __future__ import annotations

import tensorflow as tf


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
    return {"rpn_objectness_loss": objectness_loss, "rpn_box_loss": box_loss}


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

    pred_deltas = tf.cast(pred_deltas, tf.float32)
    if pred_deltas.shape[-2] == 1:
        deltas = pred_deltas[..., 0, :]
    else:
        # [B, R, K+1, 4] -> [B, R, 4]: the deltas predicted for each RoI's GT class.
        deltas = tf.gather(pred_deltas, labels, axis=2, batch_dims=2)
    foreground = validf * tf.cast(labels > 0, tf.float32)
    box = tf.reduce_sum(smooth_l1(deltas, box_targets, box_beta), axis=-1)
    box_loss = tf.reduce_sum(box * foreground) / num_valid
    return {"rcnn_class_loss": class_loss, "rcnn_box_loss": box_loss}
