"""Unit tests of the dataset reader: every bad input names the file and row."""

import tempfile
import unittest
from pathlib import Path

from dermtrain import data


class DatasetReaderTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = Path(self.tmp.name)
        (self.root / "melanoma").mkdir()
        (self.root / "melanoma" / "a.jpg").write_bytes(b"x")
        self.classes = data.load_classes()

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, text):
        (self.root / "manifest.csv").write_text(text)

    def error(self):
        with self.assertRaises(data.DatasetError) as cm:
            data.read_dataset(self.root, self.classes)
        return str(cm.exception)

    def test_good_manifest(self):
        self.write("path,class,split,source\nmelanoma/a.jpg,melanoma,train,s\n")
        s = data.read_dataset(self.root, self.classes)
        self.assertEqual((s[0].label, s[0].split, s[0].source), (5, "train", "s"))

    def test_missing_file_names_row(self):
        self.write("path,class,split\nmelanoma/a.jpg,melanoma,train\nmelanoma/b.jpg,melanoma,val\n")
        e = self.error()
        self.assertIn("manifest.csv:3", e)
        self.assertIn("b.jpg", e)

    def test_unknown_class_names_row(self):
        self.write("path,class,split\nmelanoma/a.jpg,psoriasis,train\n")
        e = self.error()
        self.assertIn("manifest.csv:2", e)
        self.assertIn("psoriasis", e)

    def test_bad_row_and_missing_columns(self):
        self.write("path,class,split\nmelanoma/a.jpg,,train\n")
        self.assertIn("manifest.csv:2: empty", self.error())
        self.write("path,label\nmelanoma/a.jpg,melanoma\n")
        self.assertIn("missing column", self.error())

    def test_class_folders(self):
        s = data.read_dataset(self.root, self.classes)
        self.assertEqual(len(s), 1)
        (self.root / "eczema").mkdir()
        self.assertIn("unknown class folder", self.error())

    def test_crop_box_matches_rust(self):
        spec = data.input_spec_for(224)
        self.assertEqual(data.crop_box(640, 480, 224, 224, spec["resize"]), (80.0, 0.0, 560.0, 480.0))
        self.assertEqual(data.crop_box(300, 400, 224, 224, spec["resize"]), (0.0, 50.0, 300.0, 350.0))


if __name__ == "__main__":
    unittest.main()
