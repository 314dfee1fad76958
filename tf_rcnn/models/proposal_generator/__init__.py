"""The first stage of Faster R-CNN, Mask R-CNN and R-FCN: the Region Proposal Network.

``RPNHead`` is the bare network (3x3 conv, sibling 1x1 objectness and box convs, shared over
levels); ``RegionProposalNetwork`` wires it with anchors, the proposal layer and, in training,
the anchor targets and the RPN losses.
"""

from tf_rcnn.models.proposal_generator.rpn import RegionProposalNetwork
from tf_rcnn.models.proposal_generator.rpn_head import RPNHead

__all__ = ["RPNHead", "RegionProposalNetwork"]
