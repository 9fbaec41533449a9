"""Training and evaluation, apart from serving (as open_clip_train is apart from open_clip).

    zest.training.embedded   the scene generator, trainer and evaluator of the embedded zest-tiny model
    zest.training.rec        data loading, trainer, baselines and evaluation of the ZESRec recommender

Nothing under zest.models or zest.service imports this package; the bento does not ship it.
"""
