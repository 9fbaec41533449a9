"""Evaluate and adapt zero-shot classification on a user's own labelled images.

    data      image-folder trees (one sub-folder per class, optional classes.yaml) and the held-out split
    features  reading images (unreadable ones listed, never fatal) and the on-disk image-feature cache
    metrics   top-k accuracy, confusion matrix, per-class precision / recall / support
    report    the confusion-matrix PNG, the failure sheet (HTML) and the text tables
    evaluate  `zest eval`: zero-shot (or head) metrics on a folder, in process or against a server (--url)
    adapt     few-shot adaptation of the zero-shot head on cached features (Tip-Adapter, linear, WiSE-FT)
    compare   the measurement behind adapt's default method (scene-generator benchmark)
    cli       the `zest eval` and `zest adapt` commands

The heads that `zest adapt` writes are read and applied by zest.models.heads, which serving uses.
"""
