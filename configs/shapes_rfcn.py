"""Shapes R-FCN: the R-FCN design with the tiny backbone on the synthetic shapes dataset.

Architecture as in R-FCN (Dai et al. 2016): RPN on C4 (stride 16), the head on C5 kept at stride
16 by dilation (``TinyBackbone(dilate_c5=True)``, the same change the paper makes to ResNet's
conv5), a 1x1 reduce conv, position-sensitive score maps, PS-RoI pooling + voting, OHEM.
Values differ from the paper only where the 128 px images and the tiny backbone demand it; each
such value says why. Starts from ``configs/shapes_faster_rcnn.py`` (the tiny backbone, the shapes
data and the training setup) and sets what R-FCN changes.

Resolution: the 128 px shapes (12-64 px objects) are fed at 256 px. At 128 px an object covers
less than one to four cells of the stride-16 maps R-FCN works on, and the model trained to only
0.63 bbox AP50 in 3000 steps (proposal recall 0.94, so the PS score maps were the bottleneck);
at 256 px (like the paper's 600 px images relative to its objects) it reached 0.90 after 1000
steps. Even so an RoI spans only 1.5-8 cells, so the demo uses a 3 x 3 grid (the paper's
illustration size; a 7 x 7 grid would mostly subdivide single cells) with bilinear PS-RoIAlign
bins (quantised bins of a small RoI collapse onto one pixel).
"""

from tf_rcnn.config import base_recipe, default_config


def get_config():
    config = base_recipe("shapes_faster_rcnn")
    m = config.model
    m.type = "rfcn"
    m.backbone.dilate_c5 = True  # C5 at stride 16 for the head, as R-FCN's dilated conv5
    m.neck.type = "none"  # R-FCN has no FPN
    # Not read by R-FCN (no FPN neck, no fc box head): back to the defaults rather than the
    # shapes FPN's widths, which would suggest they matter here.
    defaults = default_config().model
    m.neck.out_channels = defaults.neck.out_channels
    m.roi_head.fc_dims = defaults.roi_head.fc_dims
    m.rpn.in_features = ("C4",)  # R-FCN: RPN on the shared conv4 features
    # One stride-16 level: three sizes covering the 24-128 px shapes at 256 px (the paper's
    # 128-512 are for 600 px images).
    m.rpn.anchor_sizes = ((32.0, 64.0, 128.0),)
    m.rpn.pre_nms_topk_train = 1000
    m.rpn.post_nms_topk_train = 300  # R-FCN: OHEM over N = 300 proposals per image
    m.rpn.pre_nms_topk_test = 1000
    m.rpn.post_nms_topk_test = 300  # R-FCN Sec. 3.1: 300 RoIs at test time
    m.roi_head.in_features = ("C5",)
    m.roi_head.batch_size_per_image = 128  # only used with model.roi_head.ohem=False
    m.rfcn.k = 3  # see the module docstring
    m.rfcn.channels = 256  # the tiny C5 has 128 channels; the paper's 1024 is for 2048-ch res5
    m.rfcn.pool_mode = "align"  # see the module docstring
    m.roi_head.ohem = True
    m.roi_head.ohem_batch_size = 128  # R-FCN: B = 128
    m.roi_head.ohem_nms_threshold = 0.7  # OHEM paper Sec. 4

    d = config.data
    d.scales = (256,)  # 2x upsampling, see the module docstring
    d.max_size = 256
    d.size_divisor = 16  # the deepest map used is stride 16

    config.train.total_steps = 2500  # ~10 min on a 2-core CPU at 256 px (about 35 img/s)
    # The paper's 4-step alternating schedule (--config.train.schedule_mode=alternating): RPN,
    # R-FCN on its proposals from a fresh trunk, RPN on the frozen shared convs, R-FCN layers.
    # The two full trainings (stages 1 and 2) get the joint recipe's steps, the two
    # fine-tunings half: held-out bbox AP50 0.936 (AP 0.713, AP75 0.824; 200 val images,
    # benchmarks/train_scaling.py alternating --recipe=shapes_rfcn --steps=2500,2500,1250,1250).
    # Shorter stage-2 training leaves the fresh trunk weak (AP50 0.81 with 500,1300,250,450).
    config.train.alternating_steps = (2500, 2500, 1250, 1250)
    return config
