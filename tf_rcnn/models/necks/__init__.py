"""tf_rcnn.models.necks: feature pyramid necks (``FPN``)."""

from tf_rcnn.models.necks.fpn import FPN

__all__ = ["FPN"]
