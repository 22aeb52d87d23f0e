"""The synthetic scene-biased video set (prep-synth): a world whose truth is known.

    generate.py  the videos and their truth files (python -m prep.synth, or prep-synth)
    actor.py     the stick-figure actors and their actions
    scenes.py    the procedural scene backgrounds, named after Places365 categories, and their
                 soft scene labels

Real-data prep never imports this package: prep-synth writes everything prep-shards needs
(labels, boxes, scene names and soft scene labels) into RAW/annotations.
"""
