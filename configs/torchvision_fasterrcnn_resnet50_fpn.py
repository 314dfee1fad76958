"""torchvision's ``fasterrcnn_resnet50_fpn`` (COCO_V1 weights, 37.0 box AP) as a tf_rcnn recipe.

Every convention that changes numbers is set to torchvision's value, so the weights imported by
``python -m tf_rcnn.tools.import_weights --source=torchvision --arch=fasterrcnn_resnet50_fpn``
give torchvision's detections (torchvision 0.29, ``models/detection``):

- input: RGB in [0, 1] normalised with the ImageNet mean/std (the same as 0-255 input with
  255x those values); resized by ``GeneralizedRCNNTransform`` (shorter side 800, longer at most
  1333, the factor in float64, canvas ``floor(h * s)``, bilinear without antialiasing); padded
  with zeros to multiples of 32;
- ResNet-50 "v1.5" (stride in the 3x3 conv) with frozen BatchNorm of epsilon 0 (torchvision
  sets it to 0 when it loads these v1 weights); conv1 and layer1 frozen;
- FPN on C2-C5 with a stride-2 subsampled P6, no norm;
- anchors 32-512 on P2-P6, ratios h/w 0.5/1/2, base anchors rounded to integers, centred on
  the cell corners (offset 0); RPN head one 3x3 conv; per level the 1000 best before NMS 0.7,
  boxes of at least 1e-3 px, 1000 kept over all levels;
- box coder (10, 10, 5, 5) with the log(1000/16) clamp; MultiScaleRoIAlign 7x7, sampling
  ratio 2, ``aligned=False``, level k = floor(4 + log2(sqrt(area) / 224) + 1e-6) on P2-P5;
  two fc of 1024 (the imported fc6 rows are reordered from torchvision's NCHW flatten to
  tf_rcnn's NHWC one);
- detections: softmax, score > 0.05, boxes of at least 0.01 px, per-class NMS 0.5, 100 kept.

Classes: torchvision's 91 outputs are background + COCO category ids 1..90 (ten of them unused
by COCO), so an imported model has ``num_classes = 90`` and class c is COCO id c.

Training values (for fine-tuning an imported model) follow torchvision's references: RPN and
R-CNN box losses with smooth-L1 beta 1/9, 512 RoIs at 25% foreground, no cross-boundary anchor
filter.
"""

from tf_rcnn.config import default_config
from tf_rcnn.data.pipeline import IMAGENET_MEAN, IMAGENET_STD


def get_config():
    config = default_config()
    m = config.model
    m.type = "faster_rcnn"
    # num_classes: 90 for torchvision's COCO weights (python -m tf_rcnn.tools.import_weights
    # and tf_rcnn.pretrained.load set it); fine-tuning takes it from the training data.
    b = m.backbone
    b.name = "resnet50"
    b.weights = None  # the import writes every weight
    b.freeze_at = 2  # trainable_backbone_layers=3: conv1 and layer1 frozen
    b.norm = "frozen_bn"
    b.stride_in_1x1 = False  # torchvision's ResNet: stride in the 3x3 conv
    b.norm_epsilon = 0.0  # torchvision overwrites FrozenBatchNorm2d eps to 0 for COCO_V1
    m.neck.type = "fpn"
    m.neck.out_channels = 256
    r = m.rpn
    r.in_features = ("P2", "P3", "P4", "P5", "P6")
    r.anchor_sizes = ((32.0,), (64.0,), (128.0,), (256.0,), (512.0,))
    r.aspect_ratios = (0.5, 1.0, 2.0)  # h / w
    r.anchor_offset = 0.0  # anchors centred on cell corners (shifts = arange(W) * stride)
    r.round_anchors = True
    r.pre_nms_topk_train = 2000
    r.post_nms_topk_train = 2000
    r.pre_nms_topk_test = 1000
    r.post_nms_topk_test = 1000
    r.nms_threshold = 0.7
    r.min_size = 1e-3
    r.straddle_threshold = -1.0  # torchvision keeps cross-boundary anchors
    r.box_loss_beta = 1.0 / 9.0
    h = m.roi_head
    h.in_features = ("P2", "P3", "P4", "P5")
    h.pooler = "roi_align"
    h.pooler_resolution = 7
    h.sampling_ratio = 2
    h.aligned = False
    h.box_head = "fpn_fc"
    h.fc_dims = (1024, 1024)
    h.batch_size_per_image = 512
    h.positive_fraction = 0.25
    h.fg_iou = 0.5
    h.bg_iou_low = 0.0
    h.box_loss_beta = 1.0 / 9.0
    h.score_threshold = 0.05
    h.nms_threshold = 0.5
    h.detections_per_image = 100
    h.min_size = 1e-2

    d = config.data
    d.dataset = "coco"
    d.scales = (800,)
    d.max_size = 1333
    d.resize_rule = "torchvision"
    d.size_divisor = 32
    d.pixel_mean = IMAGENET_MEAN  # 255 * (0.485, 0.456, 0.406)
    d.pixel_std = IMAGENET_STD  # 255 * (0.229, 0.224, 0.225)
    return config
