"""The demo models: trained deterministically, with valid signatures and validation sets."""

from __future__ import annotations

import csv
import hashlib
import io
from typing import Any

import pytest
import torch

from apps.registry import architectures, demo_training, encoding
from apps.registry.demo_training import TrainedModel
from apps.registry.signature import Signature

TRAINERS = {
    "credit_v1": demo_training.train_credit_v1,
    "credit_v2": demo_training.train_credit_v2,
    "digits_v1": demo_training.train_digits_v1,
}
ACCURACY_FLOOR = {"credit_v1": 0.68, "credit_v2": 0.68, "digits_v1": 0.93}


@pytest.fixture(scope="module")
def trained() -> dict[str, TrainedModel]:
    return {name: train() for name, train in TRAINERS.items()}


def parse_value(feature: dict[str, Any], text: str) -> Any:
    kind = feature["type"]
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":
        return {"true": True, "false": False, "1": True, "0": False}[text.lower()]
    return text


def validation_rows(model: TrainedModel) -> tuple[list[dict[str, Any]], list[str]]:
    features = model.signature["features"]
    reader = csv.DictReader(io.StringIO(model.validation_csv.decode()))
    assert reader.fieldnames == [f["name"] for f in features] + ["label"]
    rows, labels = [], []
    for record in reader:
        labels.append(record.pop("label"))
        rows.append({f["name"]: parse_value(f, record[f["name"]]) for f in features})
    return rows, labels


def load(model: TrainedModel) -> torch.nn.Module:
    network = architectures.build(model.architecture, model.architecture_kwargs)
    network.load_state_dict(torch.load(io.BytesIO(model.state_dict), weights_only=True))
    return network.eval()


def test_training_is_deterministic_and_leaves_torch_settings_alone(
    trained: dict[str, TrainedModel],
) -> None:
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    rng = torch.random.get_rng_state()
    again = demo_training.train_credit_v1()
    assert again.state_dict == trained["credit_v1"].state_dict
    assert again == trained["credit_v1"]
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.equal(torch.random.get_rng_state(), rng)


@pytest.mark.parametrize("name", ["credit_v1", "credit_v2"])
def test_standardisation_is_set_from_the_training_data(
    trained: dict[str, TrainedModel], name: str
) -> None:
    state = load(trained[name]).state_dict()
    width = trained[name].architecture_kwargs["n_inputs"]
    assert state["norm.mean"].shape == (width,)
    assert not torch.equal(state["norm.mean"], torch.zeros(width))
    assert not torch.equal(state["norm.scale"], torch.ones(width))
    assert bool((state["norm.scale"] > 0).all())


@pytest.mark.parametrize("name", list(TRAINERS))
def test_signature_is_valid_and_matches_the_architecture(
    trained: dict[str, TrainedModel], name: str
) -> None:
    model = trained[name]
    signature = Signature.model_validate(model.signature)
    assert signature.as_dict() == model.signature
    assert model.architecture in architectures.ARCHITECTURES
    if "n_inputs" in model.architecture_kwargs:
        assert model.architecture_kwargs["n_inputs"] == signature.input_width
    else:
        assert signature.input_width == 64
    assert model.architecture_kwargs.get("n_classes", 10) == len(signature.output.labels)
    assert all(t.strip() for t in (model.intended_use, model.limitations))
    assert model.ethical_considerations.strip()
    assert model.description.strip()
    assert len(model.dataset_name) <= 120
    assert len(model.dataset_version) <= 60
    assert len(model.dataset_sha256) == 64


@pytest.mark.parametrize("name", list(TRAINERS))
def test_validation_rows_satisfy_the_signature(trained: dict[str, TrainedModel], name: str) -> None:
    model = trained[name]
    rows, labels = validation_rows(model)
    assert rows
    for row in rows:
        assert encoding.check_row(model.signature, row) == []
    assert set(labels) == set(model.signature["output"]["labels"])


@pytest.mark.parametrize("name", list(TRAINERS))
def test_held_out_accuracy_is_above_the_floor(trained: dict[str, TrainedModel], name: str) -> None:
    model = trained[name]
    network = load(model)
    rows, labels = validation_rows(model)
    with torch.no_grad():
        predicted = network(torch.from_numpy(encoding.encode(model.signature, rows))).argmax(1)
    names = model.signature["output"]["labels"]
    accuracy = sum(names[int(p)] == y for p, y in zip(predicted, labels, strict=True)) / len(rows)
    assert accuracy >= ACCURACY_FLOOR[name]


def test_credit_split_and_lineage(trained: dict[str, TrainedModel]) -> None:
    v1, v2 = trained["credit_v1"], trained["credit_v2"]
    signature = Signature.model_validate(v1.signature)
    assert signature.output.positive_label == "bad"
    assert signature.feature("sex").protected
    assert signature.feature("age").protected
    assert signature.feature("age").group_edges
    assert (v1.architecture, v2.architecture) == ("logistic_regression", "mlp")
    assert (v1.version, v2.version) == ("1.0.0", "2.0.0")
    assert v1.validation_csv == v2.validation_csv
    assert v1.training_subject_refs == v2.training_subject_refs
    refs = v1.training_subject_refs
    assert len(refs) == 700
    assert len(set(refs)) == 700
    assert all(r.startswith("applicant-") and 1 <= int(r[10:]) <= 1000 for r in refs)
    rows, labels = validation_rows(v1)
    assert len(rows) == 300
    assert labels.count("bad") == 90
    source = demo_training.GERMAN_CREDIT_CSV.read_bytes()
    assert v1.dataset_sha256 == hashlib.sha256(source).hexdigest()


def test_digits_has_no_personal_data(trained: dict[str, TrainedModel]) -> None:
    digits = trained["digits_v1"]
    signature = Signature.model_validate(digits.signature)
    assert [f.name for f in signature.features] == [f"px_{i}" for i in range(64)]
    assert signature.output.labels == [str(d) for d in range(10)]
    assert not any(f.protected or f.pii for f in signature.features)
    assert digits.training_subject_refs == []
