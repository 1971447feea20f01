"""Unit tests of the test-time-augmentation check's views and its held-out operating point."""

import unittest

import numpy as np
from dermtrain import tta


class DihedralViewsTest(unittest.TestCase):
    def test_eight_distinct_pixel_permutations_identity_then_hflip(self):
        x = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
        views = tta.dihedral_views(x)
        self.assertEqual(len(views), 8)
        np.testing.assert_array_equal(views[0], x)
        np.testing.assert_array_equal(views[2], x[:, :, :, ::-1])  # the device's freeze flip
        flat = {v.tobytes() for v in views}
        self.assertEqual(len(flat), 8)
        for v in views:
            self.assertEqual(v.shape, x.shape)
            self.assertTrue(v.flags["C_CONTIGUOUS"])
            # Same pixels per image and channel, only moved.
            np.testing.assert_array_equal(np.sort(v.reshape(2, 3, -1)), np.sort(x.reshape(2, 3, -1)))

    def test_group_is_closed_under_a_quarter_turn(self):
        x = np.random.default_rng(1).random((1, 1, 5, 5))
        views = {v.tobytes() for v in tta.dihedral_views(x)}
        turned = np.ascontiguousarray(np.rot90(x, 1, axes=(2, 3)))
        self.assertIn(turned.tobytes(), views)


class SplitHalfTest(unittest.TestCase):
    def test_separable_scores_give_full_specificity(self):
        score = np.concatenate([np.linspace(0.6, 1.0, 40), np.linspace(0.0, 0.4, 160)])
        pos = np.array([True] * 40 + [False] * 160)
        sens, spec = tta.split_half(score, pos, halves=5)
        self.assertEqual(spec, 1.0)
        self.assertGreaterEqual(sens, 0.9)

    def test_random_scores_give_chance_specificity(self):
        # (Not seed 0..4: split_half draws its halves from those, which would sort by score.)
        rng = np.random.default_rng(123)
        score, pos = rng.random(2000), rng.random(2000) < 0.3
        sens, spec = tta.split_half(score, pos, halves=5)
        self.assertGreater(sens, 0.9)
        self.assertLess(spec, 0.12)  # a 95 %-sensitive cut on noise spares ~5 % of negatives

    def test_halves_without_positives_are_skipped(self):
        score = np.linspace(0, 1, 10)
        self.assertEqual(tta.split_half(score, np.zeros(10, bool), halves=3), (None, None))
        pos = np.array([False] * 9 + [True])  # one positive: never in both halves
        self.assertEqual(tta.split_half(score, pos, halves=3), (None, None))


if __name__ == "__main__":
    unittest.main()
