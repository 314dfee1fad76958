"""TwoStageDetector: the one base of Fast R-CNN, Faster R-CNN, R-FCN and Mask R-CNN.

The base only wires parts: ``backbone`` (+ optional ``neck``) -> features; an optional ``rpn``
(``RegionProposalNetwork``) -> proposals, or proposals given with the input (Fast R-CNN); and
``roi_heads`` -> losses in training, detections at inference. The training step lives here
(``compute_losses`` / ``train_step``), so ``model.fit(dataset)`` trains every variant and the
strategy-aware trainer in ``tf_rcnn.training`` calls the same ``compute_losses``.

Inputs:
    ``images [B, H, W, 3]`` float32, already normalised and padded; or a dict with ``images`` and
    optionally ``image_shape [B, 2]`` int32 (true sizes before padding; default: the full padded
    size) and ``proposals [B, P, 4]`` (Fast R-CNN; rows with zero area are padding).
Training element:
    ``(images, targets)``; targets holds ``boxes [B, M, 4]``, ``classes [B, M]`` int32 (-1 pad),
    ``image_shape [B, 2]``, optional ``crowd_boxes``, ``masks`` or ``proposals``.
Outputs (inference):
    ``detection_boxes [B, D, 4]`` pixels of the network input, ``detection_scores [B, D]``,
    ``detection_classes [B, D]`` int32 (1..K, 0 padding), ``num_detections [B]`` int32, plus what
    the heads add (``detection_masks`` for Mask R-CNN).
Losses:
    ``rpn_objectness_loss``, ``rpn_box_loss`` (with an RPN), the RoI heads' losses, ``total_loss``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_rcnn.models.serialization import deserialize_keys, serialize_optional
from tf_rcnn.ops import boxes as box_ops
from tf_rcnn.ops import losses as loss_lib


@keras.saving.register_keras_serializable(package="tf_rcnn")
class TwoStageDetector(keras.Model):
    """Backbone (+ neck) -> [RPN] -> RoI heads.

    Args:
        backbone: model mapping images to a dict of named feature maps.
        roi_heads: an ``RoIHeads`` (or subclass) instance.
        num_classes: K, the number of object classes (background excluded).
        neck: optional model mapping the backbone's dict to another dict (e.g. ``FPN``).
        rpn: optional ``RegionProposalNetwork``; without it proposals come with the inputs.
        given_proposals: build a family that has an RPN (``needs_rpn``) without it, its RoI heads
            reading proposals given with the inputs like Fast R-CNN (stage 2 of the 4-step
            alternating schedule, ``tf_rcnn.training.alternating``); ``rpn`` must be None.
        rpn_in_features: names of the feature maps the RPN reads, fine to coarse.
        roi_in_features: names of the feature maps the RoI pooler reads, fine to coarse.
        label_map: optional JSON-able dict describing the dataset classes (contiguous id ->
            dataset id and name), saved with the model so detections can be reported in dataset
            ids.
    """

    # What a family needs, declared by the subclasses (code outside the builder asks these,
    # never the config's model.type):
    #   needs_rpn: True (learned proposals), False (proposals come with the inputs) or None
    #       (either, the generic base);
    #   needs_proposals: the inputs (and training targets) carry ``proposals [B, P, 4]``;
    #   needs_masks: training targets carry ``masks`` and detections ``detection_masks``.
    # And the default feature names used when the caller gives none.
    needs_rpn: bool | None = None
    needs_proposals: bool = False
    needs_masks: bool = False
    default_rpn_in_features: tuple[str, ...] = ()
    default_roi_in_features: tuple[str, ...] = ()

    def __init__(
        self,
        backbone: keras.Model,
        roi_heads: keras.layers.Layer,
        num_classes: int,
        neck: keras.layers.Layer | None = None,
        rpn: keras.layers.Layer | None = None,
        rpn_in_features: Sequence[str] | None = None,
        roi_in_features: Sequence[str] | None = None,
        label_map: dict | None = None,
        given_proposals: bool = False,
        **kwargs,
    ):
        name = type(self).__name__
        if self.needs_rpn and rpn is None and not given_proposals:
            raise ValueError(f"{name} needs an rpn (a RegionProposalNetwork); pass "
                             "given_proposals=True to run its RoI heads on proposals given "
                             "with the inputs.")
        if given_proposals and rpn is not None:
            raise ValueError(f"{name}(given_proposals=True) takes no rpn: its proposals come "
                             "with the inputs.")
        if self.needs_rpn is False and rpn is not None:
            raise ValueError(f"{name} takes no rpn (proposals come with the inputs); use "
                             "FasterRCNN to learn proposals.")
        if rpn is None:
            rpn_in_features = ()  # nothing reads them
        elif rpn_in_features is None:
            rpn_in_features = self.default_rpn_in_features
        if roi_in_features is None:
            roi_in_features = self.default_roi_in_features
        # Mixed precision: pass boxes through uncast (float32); the sub-layers cast their
        # own inputs, so only the convolutions run in the low-precision dtype.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (background excluded), got {num_classes}.")
        if rpn is not None and not rpn_in_features:
            raise ValueError("rpn_in_features must name the feature maps the RPN reads.")
        if not roi_in_features:
            raise ValueError("roi_in_features must name the feature maps the RoI heads read.")
        self.backbone = backbone
        self.neck = neck
        self.rpn = rpn
        # Without an RPN the proposals come with the inputs, whatever the class says.
        self.needs_proposals = rpn is None
        self.given_proposals = bool(given_proposals)
        self.roi_heads = roi_heads
        self.num_classes = int(num_classes)
        self.rpn_in_features = tuple(rpn_in_features)
        self.roi_in_features = tuple(roi_in_features)
        self.label_map = label_map
        names = (tuple(rpn.loss_names) if rpn is not None else ()) + tuple(roi_heads.loss_names)
        self.loss_names = (*names, loss_lib.TOTAL_LOSS_NAME)
        self._check_parts()
        self._loss_trackers = {n: keras.metrics.Mean(name=n) for n in self.loss_names}

    def _check_parts(self) -> None:
        """Family-specific checks of the parts (raise ValueError with the fix)."""
        if self.needs_masks and not getattr(self.roi_heads, "predicts_masks", False):
            raise ValueError(
                f"{type(self).__name__} needs roi_heads with a mask branch (MaskRoIHeads); got "
                f"{type(self.roi_heads).__name__}."
            )

    # ----------------------------------------------------------------------------- building
    def dummy_image_size(self) -> int:
        """Side of the square zero image :meth:`build_with_dummy_inputs` uses: twice the
        coarsest stride of every feature map (so each pyramid level exists), at least 64."""
        strides = dict(getattr(self.backbone, "output_strides", {}))
        if self.neck is not None:
            strides.update(getattr(self.neck, "output_strides", {}))
        return max(64, 2 * max(strides.values(), default=32))

    def build(self, input_shape: Any = None) -> None:
        """Creates nothing itself: each part creates its variables on its first call, inside
        this model's name scope (the same paths). Without this method Keras first traces the
        whole detector symbolically to build it (R50-FPN: 1.6 s), before the eager dummy call
        of :meth:`build_with_dummy_inputs` that creates the variables anyway."""
        del input_shape

    def build_with_dummy_inputs(self, image_size: int | None = None) -> None:
        """Creates every variable with one inference call on a zero image.

        The one way tf_rcnn builds a detector before restoring weights (the builder's users,
        the fine-tuning API, ``keras.models.load_model``): variables are created inside the
        model's own name scope, so their paths (checkpoint keys) do not depend on how the model
        was constructed. Call it under the strategy scope when training distributed.

        Args:
            image_size: side of the zero image (default :meth:`dummy_image_size`).
        """
        side = int(image_size or self.dummy_image_size())
        inputs = {"images": tf.zeros([1, side, side, 3], tf.float32)}
        if self.needs_proposals:
            inputs["proposals"] = tf.constant([[[0.0, 0.0, side / 2, side / 2]]], tf.float32)
        # Two proposals create the same variables as a thousand, and the second stage's cost
        # follows their number (a C4 head runs res5 on each: 12 s for the default 1000).
        proposal_layer = getattr(self.rpn, "proposal_layer", None)
        saved = getattr(proposal_layer, "post_nms_topk_test", None)
        try:
            if saved is not None:
                proposal_layer.post_nms_topk_test = min(saved, 2)
            self(inputs, training=False)
        except Exception:
            self.built = False  # build() ran before the call failed; the variables did not
            raise
        finally:
            if saved is not None:
                proposal_layer.post_nms_topk_test = saved

    def build_from_config(self, config: dict) -> None:
        """``keras.models.load_model`` hook: build exactly as the builder does (the saved
        input shape is not needed; any image size creates the same variables)."""
        del config
        self.build_with_dummy_inputs()

    # ----------------------------------------------------------------------------- plumbing
    @property
    def metrics(self):
        return list(self._loss_trackers.values())

    def compile(self, optimizer=None, jit_compile=False, **kwargs):
        """Keras ``compile`` with detection defaults; no ``loss`` is needed (the model computes
        its own losses in ``train_step``).

        Args:
            optimizer: default ``SGD(learning_rate=0.01, momentum=0.9, global_clipnorm=10)``,
                a fine-tuning rate for batches of about 8 images (Detectron uses 0.02 at 16).
            jit_compile: default False: XLA cannot compile the dynamic-size NMS and top-k ops.
            **kwargs: forwarded to ``keras.Model.compile``.
        """
        if optimizer is None:
            optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9,
                                             global_clipnorm=10.0)
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)

    def compile_from_config(self, config):
        """Re-compiles a model loaded by ``keras.models.load_model`` (Keras skips models with a
        custom ``compile`` unless they implement this)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @staticmethod
    def parse_inputs(inputs) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
        """``images`` or ``{"images", "image_shape", "proposals"}`` -> ``(images float32,
        image_shape [B, 2] int32 (default: the full padded size), proposals or None)``."""
        if isinstance(inputs, dict):
            images = inputs["images"]
            image_shape = inputs.get("image_shape")
            proposals = inputs.get("proposals")
        else:
            images, image_shape, proposals = inputs, None, None
        images = tf.cast(images, tf.float32)
        if image_shape is None:
            # [B, 2]: every image fills the whole (unpadded) input.
            hw = tf.shape(images)[1:3]
            image_shape = tf.tile(hw[tf.newaxis], [tf.shape(images)[0], 1])
        return images, tf.cast(image_shape, tf.int32), proposals

    def extract_features(self, images: tf.Tensor, training: bool = False) -> dict:
        """Backbone (+ neck) features as a dict of named maps."""
        features = self.backbone(images, training=training)
        if self.neck is not None:
            features = self.neck(features, training=training)
        return features

    @staticmethod
    def _select(features: dict, names: Sequence[str]) -> list:
        missing = [n for n in names if n not in features]
        if missing:
            raise ValueError(
                f"Feature maps {missing} are not produced; available: {sorted(features)}."
            )
        return [features[n] for n in names]

    @staticmethod
    def external_proposals(proposals: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Given proposals ``[B, P, 4]`` (zero-area rows are padding) -> (boxes, valid)."""
        proposals = tf.cast(proposals, tf.float32)
        return proposals, box_ops.area(proposals) > 0.0

    def _proposals(self, features, image_shape, proposals=None, targets=None, training=False):
        """(proposals, valid, rpn losses dict) from the RPN or from given proposals."""
        if self.rpn is None:
            if proposals is None:
                raise ValueError(
                    f"{type(self).__name__} has no RPN: pass proposals [B, P, 4] with the inputs "
                    "(inputs['proposals'] at inference, targets['proposals'] in training)."
                )
            boxes, valid = self.external_proposals(proposals)
            return boxes, valid, {}
        out = self.rpn(
            self._select(features, self.rpn_in_features),
            image_shape,
            targets=targets,
            training=training,
        )
        losses = {k: out[k] for k in self.rpn.loss_names if k in out}
        return out["proposals"], out["proposal_valid"], losses

    # ----------------------------------------------------------------------------- forward
    def call(self, inputs, training=False):
        """Inference: detections dict (see module docstring). Test-time proposal numbers are
        used whatever ``training`` says; losses come from ``compute_losses``."""
        return self.detect_with_proposals(inputs, return_proposals=False)

    def detect_with_proposals(self, inputs, return_proposals: bool = True) -> dict:
        """One inference pass returning the detections and, optionally, the proposals
        (``proposals [B, P, 4]``, ``proposal_valid [B, P]``) they came from."""
        images, image_shape, proposals = self.parse_inputs(inputs)
        features = self.extract_features(images, training=False)
        return self.detect_from_features(features, image_shape, proposals,
                                         return_proposals=return_proposals)

    def detect_from_features(self, features: dict, image_shape: tf.Tensor,
                             proposals: tf.Tensor | None = None,
                             return_proposals: bool = False) -> dict:
        """Everything after the trunk: proposals (RPN or given) -> RoI heads -> detections.

        Lets the trunk run elsewhere (an XLA-compiled function, a cached feature pass) while the
        dynamic-shape second stage stays in a plain graph; ``call`` is exactly
        ``extract_features`` followed by this.
        """
        image_shape = tf.cast(image_shape, tf.int32)
        boxes, valid, _ = self._proposals(features, image_shape, proposals, training=False)
        outputs = dict(self.roi_heads(
            self._select(features, self.roi_in_features), boxes, valid, image_shape,
            training=False,
        ))
        if return_proposals:
            outputs.update(proposals=boxes, proposal_valid=valid)
        return outputs

    def propose(self, inputs) -> dict:
        """Inference proposals: ``proposals [B, P, 4]``, ``proposal_valid [B, P]`` (the RPN's
        test-time output, or the given proposals for a detector without an RPN) and, with an
        RPN, ``proposal_scores [B, P]`` (objectness, highest first)."""
        images, image_shape, proposals = self.parse_inputs(inputs)
        features = self.extract_features(images, training=False)
        if self.rpn is not None:
            out = self.rpn(self._select(features, self.rpn_in_features), image_shape,
                           training=False)
            return {k: out[k] for k in ("proposals", "proposal_scores", "proposal_valid")}
        boxes, valid, _ = self._proposals(features, image_shape, proposals, training=False)
        return {"proposals": boxes, "proposal_valid": valid}

    def compute_losses(self, images, targets: dict, training: bool = True) -> dict:
        """Every loss term and ``total_loss`` (means over this replica's batch)."""
        images = tf.cast(images, tf.float32)
        image_shape = tf.cast(targets["image_shape"], tf.int32)
        features = self.extract_features(images, training=training)
        proposals, valid, losses = self._proposals(
            features, image_shape, targets.get("proposals"), targets=targets, training=training
        )
        roi_losses = self.roi_heads(
            self._select(features, self.roi_in_features),
            proposals,
            valid,
            image_shape,
            targets=targets,
            training=training,
        )
        losses = dict(losses)
        losses.update(roi_losses)
        losses[loss_lib.TOTAL_LOSS_NAME] = tf.add_n([losses[k] for k in self.loss_names[:-1]])
        return losses

    # ----------------------------------------------------------------------------- Keras loop
    def _update_trackers(self, losses: dict) -> dict:
        for name, tracker in self._loss_trackers.items():
            tracker.update_state(losses[name])
        return {name: tracker.result() for name, tracker in self._loss_trackers.items()}

    def train_step(self, data):
        images, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            losses = self.compute_losses(images, targets, training=True)
            loss = losses[loss_lib.TOTAL_LOSS_NAME]
            if self.losses:
                loss = loss + tf.add_n(self.losses)
            scaled = self.optimizer.scale_loss(loss) if hasattr(
                self.optimizer, "scale_loss") else loss
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        pairs = [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
        self.optimizer.apply_gradients(pairs)
        return self._update_trackers(losses)

    def test_step(self, data):
        images, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self._update_trackers(self.compute_losses(images, targets, training=False))

    def predict_step(self, data):
        inputs, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self(inputs, training=False)

    # ----------------------------------------------------------------------------- config
    def get_config(self) -> dict:
        return {
            "name": self.name,
            "backbone": serialize_optional(self.backbone),
            "neck": serialize_optional(self.neck),
            "rpn": serialize_optional(self.rpn),
            "roi_heads": serialize_optional(self.roi_heads),
            "num_classes": self.num_classes,
            "rpn_in_features": list(self.rpn_in_features),
            "roi_in_features": list(self.roi_in_features),
            # A plain copy: Keras wraps dict attributes of a layer in tracking containers that
            # hold a reference to the model (deep-copying those would copy the model).
            "label_map": None if self.label_map is None else json.loads(
                json.dumps(self.label_map)),
            "given_proposals": self.given_proposals,
        }

    @classmethod
    def from_config(cls, config: dict) -> TwoStageDetector:
        return cls(**deserialize_keys(config, ("backbone", "neck", "rpn", "roi_heads")))
