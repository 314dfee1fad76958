"""Cascade R-CNN on the synthetic shapes dataset: the demo recipe with three box stages.

``configs/shapes_faster_rcnn.py`` (same trunk, RPN, data and schedule: the same steps, so the two
compare at equal training) with ``model.type = "cascade_rcnn"``: stages at foreground IoU 0.5,
0.6, 0.7 with coder weights (10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15) (the defaults of
``model.cascade``, Cai & Vasconcelos 2018 Sec. 4.2 / Detectron2). ``benchmarks/cascade_shapes.py``
trains both recipes and compares AP, AP50 and AP75.
"""

from tf_rcnn.config import base_recipe


def get_config():
    config = base_recipe("shapes_faster_rcnn")
    m = config.model
    m.type = "cascade_rcnn"
    c = m.cascade
    # Detectron2's loss scheme (model.cascade's default): the stages' losses summed with
    # weight 1, each stage's gradient into the trunk scaled by 1/3.
    c.stage_loss_weights = (1.0, 1.0, 1.0)
    c.trunk_gradient_scale = None
    return config
