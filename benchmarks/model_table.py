"""The detector configurations the speed benchmarks (``inference.py``, ``train.py``) measure."""

# name -> (recipe in configs/, default inference size (H, W), default test proposals,
#          torchvision peer model or None)
MODELS = {
    "faster_r50_fpn": ("faster_rcnn_r50_fpn_coco.py", (640, 640), 1000,
                       "fasterrcnn_resnet50_fpn"),
    "faster_r50_c4": ("faster_rcnn_r50_c4_coco.py", (640, 640), 1000, None),
    "rfcn_r101": ("rfcn_r101_voc.py", (600, 1000), 300, None),
    "mask_r50_fpn": ("mask_rcnn_r50_fpn_coco.py", (640, 640), 1000, "maskrcnn_resnet50_fpn"),
}
