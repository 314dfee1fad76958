"""Balanced random sampling of positive and negative rows (anchors for the RPN, RoIs for heads).

Conventions (docs/design.md):
    Match labels are int32: 1 positive, 0 negative, -1 ignore (never sampled).

Shape shorthand:
    B batch, N candidate rows per image, S ``num_samples`` per image.

Method:
    Uniform sampling without replacement in the graph: each row draws a uniform key, rows that
    are not candidates get key -1, and ``top_k`` picks the rows with the largest keys. With a
    ``seed`` the keys come from stateless random ops, so the same seed gives the same sample
    (in eager mode, in ``tf.function`` and across processes); without one they come from the
    global TF random state.
"""

from __future__ import annotations

import tensorflow as tf


def _check_args(num_samples: int, positive_fraction: float) -> None:
    if int(num_samples) < 0 or int(num_samples) != num_samples:
        raise ValueError(f"num_samples must be a non-negative int, got {num_samples}.")
    if not 0.0 <= float(positive_fraction) <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}.")


def _uniform_keys(shape: tf.Tensor, seed: tuple[int, int] | tf.Tensor | None) -> tf.Tensor:
    if seed is None:
        return tf.random.uniform(shape, dtype=tf.float32)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
    if seed.shape.rank != 1 or (seed.shape[0] is not None and seed.shape[0] != 2):
        raise ValueError(
            f"seed must be a pair of ints (shape [2]) for stateless sampling, got {seed.shape}."
        )
    return tf.random.stateless_uniform(shape, seed=seed, dtype=tf.float32)


def _choose(candidates: tf.Tensor, keys: tf.Tensor, count: tf.Tensor, max_count: int) -> tf.Tensor:
    """Mask of ``count[b]`` random candidates of each row (``count <= #candidates`` and
    ``count <= max_count`` are guaranteed by the caller).

    Args:
        candidates: ``[B, N]`` bool.
        keys: ``[B, N]`` float32 uniform in ``[0, 1)``.
        count: ``[B]`` int32.
        max_count: static upper bound of ``count`` (size of the ``top_k``).
    """
    shape = tf.shape(candidates)
    k = tf.minimum(max_count, shape[1])
    masked_keys = tf.where(candidates, keys, -1.0)
    _, picked = tf.math.top_k(masked_keys, k=k)  # [B, k], candidates first
    take = tf.range(k)[None, :] < count[:, None]  # [B, k]
    batch_index = tf.broadcast_to(tf.range(shape[0])[:, None], tf.shape(picked))
    scatter_index = tf.stack([batch_index, picked], axis=-1)  # [B, k, 2]
    chosen = tf.scatter_nd(scatter_index, tf.cast(take, tf.int32), shape)
    return chosen > 0


def subsample_labels(
    labels: tf.Tensor,
    num_samples: int,
    positive_fraction: float,
    seed: tuple[int, int] | tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Pick at most ``num_samples`` rows per image, up to ``positive_fraction`` of them positive.

    Positives: ``min(#positives, floor(num_samples * positive_fraction))``; negatives fill the
    rest: ``min(#negatives, num_samples - #chosen positives)`` (Faster R-CNN Sec. 3.1.3: 256
    anchors at up to 1:1). Ignored rows (-1) are never chosen.

    Args:
        labels: ``[B, N]`` int32 in ``{1, 0, -1}``.
        num_samples: S, rows sampled per image.
        positive_fraction: maximum fraction of positives, in ``[0, 1]``.
        seed: optional ``(int, int)`` or ``[2]`` int tensor for reproducible stateless sampling.

    Returns:
        ``(pos_mask [B, N] bool, neg_mask [B, N] bool)``, disjoint.
    """
    _check_args(num_samples, positive_fraction)
    num_samples = int(num_samples)
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank != 2:
        raise ValueError(f"labels must be [B, N] int32 (1/0/-1), got shape {labels.shape}.")
    labels = tf.cast(labels, tf.int32)
    positive = tf.equal(labels, 1)
    negative = tf.equal(labels, 0)
    max_pos = int(num_samples * float(positive_fraction))
    num_pos = tf.minimum(tf.reduce_sum(tf.cast(positive, tf.int32), axis=1), max_pos)  # [B]
    num_neg = tf.minimum(
        tf.reduce_sum(tf.cast(negative, tf.int32), axis=1), num_samples - num_pos
    )
    # One key per row serves both draws: positive and negative rows are disjoint.
    keys = _uniform_keys(tf.shape(labels), seed)
    pos_mask = _choose(positive, keys, num_pos, max_pos)
    neg_mask = _choose(negative, keys, num_neg, num_samples)
    return pos_mask, neg_mask


def sample_indices(
    labels: tf.Tensor,
    num_samples: int,
    positive_fraction: float,
    seed: tuple[int, int] | tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Like :func:`subsample_labels` but returns a fixed number of row indices per image.

    Positives come first, then negatives (each group in increasing row index), then padding
    (index 0, ``valid`` False) when the image has fewer than ``num_samples`` candidates, so the
    RoI head always sees ``[B, S]`` rows.

    Args:
        labels: ``[B, N]`` int32 in ``{1, 0, -1}``.
        num_samples: S, rows per image (e.g. 512 RoIs).
        positive_fraction: maximum fraction of positives (e.g. 0.25).
        seed: optional ``(int, int)`` or ``[2]`` int tensor for reproducible stateless sampling.

    Returns:
        ``(indices [B, S] int32, valid [B, S] bool)``.
    """
    labels = tf.convert_to_tensor(labels)
    pos_mask, neg_mask = subsample_labels(labels, num_samples, positive_fraction, seed)
    num_samples = int(num_samples)
    # Rank 2 for positives, 1 for negatives, 0 otherwise; top_k keeps equal values in index
    # order, so each group comes out sorted by row index.
    rank = 2 * tf.cast(pos_mask, tf.int32) + tf.cast(neg_mask, tf.int32)  # [B, N]
    k = tf.minimum(num_samples, tf.shape(rank)[1])
    top_rank, indices = tf.math.top_k(rank, k=k)  # [B, k]
    valid = top_rank > 0
    indices = tf.where(valid, indices, 0)
    # Pad to S columns when N < S.
    pad = [[0, 0], [0, num_samples - k]]
    indices = tf.pad(indices, pad)
    valid = tf.pad(valid, pad)
    batch = labels.shape[0]
    indices = tf.ensure_shape(indices, [batch, num_samples])
    valid = tf.ensure_shape(valid, [batch, num_samples])
    return indices, valid
