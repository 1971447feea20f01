"""Unit tests of the bundle manifest (model.json): one builder, the fields the Rust parser
(`src/model/manifest.rs`) requires, and the shipped bundles round-trip through it unchanged."""

import json
import shutil
import tempfile
import unittest
from pathlib import Path

from dermtrain import bundle, calibrate, data

MODELS = Path(__file__).resolve().parent.parent
REFERENCE = MODELS / "effl0-v2" / "model.json"
SHIPPED = sorted(MODELS.glob("*/model.json"))
# `Manifest` fields without a serde default: the device refuses a model.json without them.
RUST_REQUIRED = {
    "schema_version",
    "name",
    "architecture",
    "precision",
    "classes",
    "input",
    "output",
    "temperature",
    "abstain_threshold",
    "sha256",
    "provenance",
}
RUST_OPTIONAL = {"refer", "metrics", "ood", "cam"}


def sample(**changes):
    classes = data.load_classes()
    mal = [c["id"] for c in classes if c["risk"] == calibrate.MALIGNANT_RISK]
    with tempfile.TemporaryDirectory() as run:
        prov = bundle.provenance(
            {"arch": "resnet18", "holdout": ["melanoma:ham10000"]},
            run,
            ["skin9", "skin9-extra"],
            "python -m dermtrain export ...",
            "2024-01-01T00:00:00Z",
        )
    fields = dict(
        name="t",
        architecture="resnet18",
        precision="fp32",
        classes=classes,
        input=data.input_spec_for(224),
        temperature=1.2,
        abstain_threshold=0.5,
        refer=calibrate.refer_section(classes, mal, 0.05, {"sensitivity": 0.95, "specificity": 0.4}),
        provenance=prov,
        metrics={"val": {}},
        sha256="ab" * 32,
        ood={"output": "ood", "threshold": 10.0, "method": "test"},
        cam={"output": "cam"},
    )
    fields.update(changes)
    return bundle.build_manifest(**fields)


class ManifestTest(unittest.TestCase):
    def test_has_every_field_the_rust_parser_reads(self):
        m = sample()
        self.assertLessEqual(RUST_REQUIRED, set(m))
        self.assertEqual(set(m), RUST_REQUIRED | RUST_OPTIONAL)
        self.assertEqual(set(bundle.FIELDS), RUST_REQUIRED | RUST_OPTIONAL)

    def test_same_shape_as_the_shipped_bundles(self):
        m = sample()
        self.assertGreater(len(SHIPPED), 0)
        self.assertIn(REFERENCE, SHIPPED)
        for path in SHIPPED:
            with self.subTest(bundle=path.parent.name):
                ref = json.loads(path.read_text())
                self.assertEqual(list(m), list(ref))  # same keys, same order
                for k in ("input", "output", "refer", "provenance"):
                    self.assertEqual(set(m[k]), set(ref[k]), k)
                self.assertEqual(set(m["input"]["resize"]), set(ref["input"]["resize"]))
                self.assertEqual([set(c) for c in m["classes"]], [set(c) for c in ref["classes"]])

    def test_shipped_manifests_round_trip_unchanged(self):
        for path in SHIPPED:
            with self.subTest(bundle=path.parent.name):
                text = path.read_text()
                self.assertEqual(json.dumps(bundle.build_manifest(**json.loads(text)), indent=2) + "\n", text)

    def test_update_rewrites_through_the_builder(self):
        with tempfile.TemporaryDirectory() as d:
            shutil.copyfile(REFERENCE, Path(d) / "model.json")
            old = json.loads(REFERENCE.read_text())
            new = bundle.update_manifest(d, metrics={"val": {"n": 1}})
            self.assertEqual(json.loads((Path(d) / "model.json").read_text()), new)
            self.assertEqual(new["metrics"], {"val": {"n": 1}})
            self.assertEqual(
                {k: v for k, v in new.items() if k != "metrics"}, {k: v for k, v in old.items() if k != "metrics"}
            )
            with self.assertRaises(bundle.ManifestError):
                bundle.update_manifest(d, temperature=0.0)
            self.assertEqual(json.loads((Path(d) / "model.json").read_text()), new)  # left as it was

    def test_refer_is_optional(self):
        self.assertNotIn("refer", sample(refer=None))

    def test_rejects_what_the_device_rejects(self):
        bad_classes = [dict(c) for c in data.load_classes()]
        bad_classes[1]["id"] = 5
        cases = {
            "`sha256`": dict(sha256="xyz"),
            "`classes`": dict(classes=bad_classes),
            "`temperature`": dict(temperature=-1.0),
            "`abstain_threshold`": dict(abstain_threshold=1.5),
            "`output.kind`": dict(output={"kind": "probabilities"}),
            "`precision`": dict(precision="int4"),
            "`input.layout`": dict(input=dict(data.input_spec_for(224), layout="NHWC")),
            "`input.resize.crop_fraction`": dict(
                input=dict(data.input_spec_for(224), resize={"kind": "center_crop", "crop_fraction": 0.0})
            ),
            "`refer.classes`": dict(refer={"classes": ["zz"], "threshold": 0.2}),
            "`refer.threshold`": dict(refer={"classes": ["melanoma"], "threshold": 1.5}),
            "`ood`": dict(ood={"output": "logits", "threshold": 1.0}),
            "`cam.output`": dict(cam={"output": ""}),
        }
        for field, change in cases.items():
            with self.subTest(field=field):
                with self.assertRaises(bundle.ManifestError) as cm:
                    sample(**change)
                self.assertIn(field, str(cm.exception))

    def test_only_the_bundle_module_writes_model_json(self):
        for py in sorted((MODELS / "dermtrain").glob("*.py")):
            if py.name != "bundle.py":
                self.assertNotIn('"model.json"', py.read_text(), py.name)


if __name__ == "__main__":
    unittest.main()
