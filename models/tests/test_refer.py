"""Unit tests of the refer threshold choice and figures (the device applies the same rule)."""

import unittest

import numpy as np
from dermtrain import calibrate, data


class ReferThresholdTest(unittest.TestCase):
    def test_largest_threshold_meeting_the_target_sensitivity(self):
        rng = np.random.default_rng(0)
        score = rng.random(200)
        pos = rng.random(200) < 0.3
        t = calibrate.choose_refer_threshold(score, pos, target=0.95)
        sens = (score[pos] >= t).mean()
        self.assertGreaterEqual(sens, 0.95)
        # Any higher threshold (the next positive score up) falls below the target.
        higher = np.sort(score[pos])
        higher = higher[higher > t]
        if len(higher):
            self.assertLess((score[pos] >= higher[0]).mean(), 0.95)

    def test_exact_counts(self):
        # 20 positives: flag at least 19 -> threshold = the second-lowest positive score.
        score = np.concatenate([np.linspace(0.1, 0.9, 20), np.full(5, 0.05)])
        pos = np.array([True] * 20 + [False] * 5)
        self.assertAlmostEqual(calibrate.choose_refer_threshold(score, pos, 0.95), score[1])
        self.assertAlmostEqual(calibrate.choose_refer_threshold(score, pos, 1.0), score[0])

    def test_no_positives_is_an_error(self):
        with self.assertRaises(data.DatasetError):
            calibrate.choose_refer_threshold(np.array([0.5]), np.array([False]))

    def test_figures(self):
        names = ["melanocytic_nevus", "melanoma", "atopic_dermatitis"]
        labels = np.array([0, 0, 1, 1, 2])
        score = np.array([0.1, 0.6, 0.7, 0.2, 0.9])
        f = calibrate.refer_figures(score, labels, names, 0.5, [1], ["a", "a", "b", "b", "b"])
        self.assertEqual(f["sensitivity"], 0.5)
        self.assertAlmostEqual(f["specificity"], 1 / 3)
        self.assertEqual(f["benign_not_flagged"], 0.5)  # only the nevi count as benign
        self.assertEqual(f["flagged_rate_per_class"]["melanoma"], 0.5)
        self.assertEqual(f["per_source"]["b"]["specificity"], 0.0)


if __name__ == "__main__":
    unittest.main()
