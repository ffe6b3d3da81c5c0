"""Predictions from the fast JPEG path agree with a full-size decode (see tests/agreement.py).

``python bench/fast_decode.py`` prints the figures on more photos; these bounds are loose
enough to hold on any machine (the computation is deterministic).
"""

from tests.agreement import measure


def test_the_fast_path_predicts_what_a_full_size_decode_predicts():
    result = measure([(640, 480), (1280, 720), (1920, 1080)], per_size=8)
    for other, a in result.items():
        assert a.class_pixels > 0.98, (other, a)
        assert a.background_label >= 0.95, (other, a)
        assert a.shapes_labels >= 0.95, (other, a)
        assert a.depth_rel < 0.02, (other, a)
        assert a.edges_mean_abs < 0.02, (other, a)
