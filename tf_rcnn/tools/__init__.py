"""Command-line tools run as ``python -m tf_rcnn.tools.<name>`` (e.g. ``dump_proposals``)."""
