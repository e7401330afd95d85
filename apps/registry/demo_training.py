"""The demo model versions, trained for real and deterministically on bundled, offline data.

* ``credit-risk`` 1.0.0 (logistic regression) and 2.0.0 (MLP) on the German Credit data
  (UCI Statlog, CC BY 4.0) stored in ``demo_data/german_credit.csv`` (see its README.md);
* ``digits`` 1.0.0 (a small CNN) on scikit-learn's bundled copy of the UCI handwritten digits.

Each function returns the weights as ``torch.save`` bytes of a state_dict of an allow-listed
architecture, the typed signature, the held-out 30 % as a validation CSV (the platform computes
metrics and fairness from it) and the lineage and model-card texts. Two calls give byte-identical
results: fixed seeds, one thread, deterministic algorithms; the caller's torch settings and RNG
state are left as they were.

Imported only by the demo seeding command, never at Django start-up (it imports torch).
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from apps.registry import architectures, encoding
from apps.registry.signature import Signature

DATA_DIR = Path(__file__).resolve().parent / "demo_data"
GERMAN_CREDIT_CSV = DATA_DIR / "german_credit.csv"

SEED = 20240517
VALIDATION_FRACTION = 0.3
LABEL_COLUMN = "label"


@dataclass(frozen=True)
class TrainedModel:
    family: str  # "credit-risk" or "digits"
    version: str  # "1.0.0", "2.0.0"
    architecture: str  # key of architectures.ARCHITECTURES
    architecture_kwargs: dict[str, Any]
    state_dict: bytes  # torch.save(model.state_dict(), buffer)
    signature: dict[str, Any]  # valid per apps.registry.signature.Signature
    validation_csv: bytes  # held-out rows: one column per feature (signature order) + "label"
    dataset_name: str
    dataset_version: str
    dataset_sha256: str  # sha256 of the source CSV bytes
    training_subject_refs: list[str]  # external references of the training rows' data subjects
    description: str
    intended_use: str
    limitations: str
    ethical_considerations: str


# --- German credit ---------------------------------------------------------------------------

CREDIT_LABELS = ["good", "bad"]  # output index 0, 1; "bad" (default) is the adverse outcome

CREDIT_FEATURES: list[dict[str, Any]] = [
    {
        "name": "checking_account",
        "type": "category",
        "description": "Balance of the applicant's checking account at this bank.",
        "allowed": ["below 0 DM", "0 to 200 DM", "200 DM or more or salary assigned", "no account"],
    },
    {
        "name": "duration_months",
        "type": "int",
        "description": "Duration of the requested credit.",
        "unit": "months",
        "minimum": 1,
        "maximum": 72,
    },
    {
        "name": "credit_amount",
        "type": "int",
        "description": "Amount of the requested credit.",
        "unit": "DM",
        "minimum": 100,
        "maximum": 20000,
    },
    {
        "name": "installment_rate",
        "type": "int",
        "description": "Instalment relative to disposable income, as the source's code 1 to 4 "
        "(a band, not a percentage; see the dataset README).",
        "minimum": 1,
        "maximum": 4,
    },
    {
        "name": "credit_history",
        "type": "category",
        "description": "Repayment history of the applicant's earlier and current credits.",
        "allowed": [
            "no credits taken or all paid back",
            "all paid back at this bank",
            "existing credits paid back so far",
            "delays in the past",
            "critical account or credits elsewhere",
        ],
    },
    {
        "name": "purpose",
        "type": "category",
        "description": "What the credit is for.",
        "allowed": [
            "new car",
            "used car",
            "furniture or equipment",
            "radio or television",
            "domestic appliances",
            "repairs",
            "education",
            "retraining",
            "business",
            "other",
        ],
    },
    {
        "name": "savings",
        "type": "category",
        "description": "Savings accounts and bonds.",
        "allowed": [
            "below 100 DM",
            "100 to 500 DM",
            "500 to 1000 DM",
            "1000 DM or more",
            "unknown or none",
        ],
    },
    {
        "name": "employment_since",
        "type": "category",
        "description": "Time in the present employment.",
        "allowed": [
            "unemployed",
            "below 1 year",
            "1 to 4 years",
            "4 to 7 years",
            "7 years or more",
        ],
    },
    {
        "name": "housing",
        "type": "category",
        "description": "Housing situation.",
        "allowed": ["rent", "own", "for free"],
    },
    {
        "name": "age",
        "type": "int",
        "description": "Age of the applicant. Protected: fairness is measured across age groups.",
        "unit": "years",
        "minimum": 18,
        "maximum": 80,
        "protected": True,
        "model_input": False,
        # Under 25 / 25 and over: the grouping of the fairness literature on this data
        # (Kamiran & Calders 2009); older groups are too small to compare (16 aged 60+).
        "group_edges": [25],
    },
    {
        "name": "sex",
        "type": "category",
        "description": "Sex of the applicant as recorded in the source data (see the dataset "
        "README on its reliability). Protected: fairness is measured across sexes.",
        "allowed": ["female", "male"],
        "protected": True,
        "model_input": False,
    },
]

CREDIT_SIGNATURE: dict[str, Any] = Signature.model_validate(
    {
        "features": CREDIT_FEATURES,
        "output": {
            "labels": CREDIT_LABELS,
            "positive_label": "bad",
            "description": "Probability of each credit risk class; 'bad' means the credit was "
            "not repaid as agreed.",
        },
    }
).as_dict()

CREDIT_DATASET_NAME = "Statlog (German Credit Data), UCI Machine Learning Repository"
CREDIT_DATASET_VERSION = "UCI 1994 (doi:10.24432/C5NC77), gatehouse recoding 1"

CREDIT_INTENDED_USE = (
    "Demonstration of a governed credit-scoring workflow in Gatehouse: registration, "
    "approval, fairness gates, consent-checked predictions and decision records. It scores "
    "the risk that a consumer credit is not repaid as agreed from nine application fields. "
    "The score is meant to support a human credit officer, never to decide alone, and only "
    "for applicants who consented to the purpose 'credit_scoring'."
)
CREDIT_LIMITATIONS = (
    "Trained on 700 of the 1000 applications of the German Credit data, collected by a "
    "southern German bank in the 1970s and published in 1994: amounts are in Deutsche Mark, "
    "the population, economy and lending practice are not today's, and the sample is small "
    "and not representative (bad credits are over-sampled to 30 %). The source's code table "
    "is known to be partly inaccurate (Groemping 2019, 'South German Credit Data'), notably "
    "for personal status and sex and for the instalment rate, which is a 1-4 code rather "
    "than a percentage. Held-out accuracy is only about 0.75 (a model that always says "
    "'good' reaches 0.70). The signature limits inputs to about the ranges seen in training "
    "(1 to 72 months, 100 to 20000 DM, ages 18 to 80). Not fit for any real lending decision."
)
CREDIT_ETHICAL = (
    "Sex and age are protected attributes. They are not model inputs: they are collected with "
    "the validation data (and may be sent with each prediction) only so that the platform's "
    "fairness gates and bias reports can measure outcomes by group. Other inputs can still act "
    "as proxies (e.g. employment duration for age), which is why the gates measure outcomes "
    "rather than trusting the absence of the attribute; anti-discrimination law applies. The "
    "recorded sex is binary and unreliable: according to "
    "Groemping's corrected code table, the code read as 'female' also covers single men. "
    "Groups are small (about 100 women, 16 applicants aged 60 or more in the held-out set), "
    "so measured disparities are noisy. Foreign-worker status, a proxy for national origin, is "
    "deliberately not an input. The data subjects are anonymous; the references "
    "'applicant-0001' to 'applicant-1000' are the row numbers of the public data set."
)


def _credit_model_card(kind: str) -> str:
    return (
        f"Credit risk {kind} on the German Credit data (UCI Statlog, CC BY 4.0): predicts "
        "whether a consumer credit will be repaid as agreed ('good') or not ('bad') from "
        "nine application fields; sex and age are recorded only to measure fairness. Trained "
        "on a stratified 70 % of the 1000 rows; the other 30 % is its validation set."
    )


def german_credit_frame() -> pd.DataFrame:
    """The bundled German credit data, one row per applicant, in source order."""
    return pd.read_csv(GERMAN_CREDIT_CSV)


def applicant_ref(index: int) -> str:
    """The external reference of the data subject of row ``index`` (0-based)."""
    return f"applicant-{index + 1:04d}"


# --- helpers -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _deterministic_torch(seed: int) -> Iterator[None]:
    """One thread, deterministic algorithms and a seeded RNG; the caller's thread count,
    deterministic-algorithms setting and RNG state restored after."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_num_threads(threads)


def _state_dict_bytes(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
    torch.save(state, buffer)
    return buffer.getvalue()


def _validation_csv(frame: pd.DataFrame, columns: list[str], labels: pd.Series) -> bytes:
    out = frame[columns].copy()
    out[LABEL_COLUMN] = labels.to_numpy()
    return out.to_csv(index=False, lineterminator="\n").encode()


def _set_standardize(model: nn.Module, x: np.ndarray) -> None:
    """Set ``norm.mean``/``norm.scale`` from the training inputs (constant columns keep 1)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    norm = model.get_submodule("norm")
    norm.get_buffer("mean").copy_(torch.from_numpy(mean.astype(np.float32)))
    norm.get_buffer("scale").copy_(torch.from_numpy(scale.astype(np.float32)))


def _fit(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
) -> None:
    """Mini-batch Adam on cross-entropy; batches shuffled by a seeded generator."""
    inputs = torch.from_numpy(x.astype(np.float32))
    targets = torch.from_numpy(y.astype(np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(inputs[batch]), targets[batch])
            loss.backward()
            optimizer.step()
    model.eval()


def _credit_split() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = german_credit_frame()
    train, held_out = train_test_split(
        frame, test_size=VALIDATION_FRACTION, stratify=frame["credit_risk"], random_state=SEED
    )
    return train.sort_index(), held_out.sort_index()


def _train_credit(
    *, version: str, architecture: str, kwargs: dict[str, Any], kind: str, **fit: Any
) -> TrainedModel:
    train, held_out = _credit_split()
    columns = [f["name"] for f in CREDIT_FEATURES]
    x = encoding.encode(CREDIT_SIGNATURE, train[columns].to_dict("records"))
    y = train["credit_risk"].map(CREDIT_LABELS.index).to_numpy()
    with _deterministic_torch(SEED):
        model = architectures.build(architecture, {"n_inputs": x.shape[1], **kwargs})
        _set_standardize(model, x)
        _fit(model, x, y, seed=SEED, **fit)
        weights = _state_dict_bytes(model)
    return TrainedModel(
        family="credit-risk",
        version=version,
        architecture=architecture,
        architecture_kwargs={"n_inputs": x.shape[1], **kwargs},
        state_dict=weights,
        signature=copy.deepcopy(CREDIT_SIGNATURE),
        validation_csv=_validation_csv(held_out, columns, held_out["credit_risk"]),
        dataset_name=CREDIT_DATASET_NAME,
        dataset_version=CREDIT_DATASET_VERSION,
        dataset_sha256=hashlib.sha256(GERMAN_CREDIT_CSV.read_bytes()).hexdigest(),
        training_subject_refs=[applicant_ref(int(i)) for i in train.index],
        description=_credit_model_card(kind),
        intended_use=CREDIT_INTENDED_USE,
        limitations=CREDIT_LIMITATIONS,
        ethical_considerations=CREDIT_ETHICAL,
    )


def train_credit_v1() -> TrainedModel:
    """credit-risk 1.0.0: multinomial logistic regression on the standardised encoded inputs."""
    return _train_credit(
        version="1.0.0",
        architecture="logistic_regression",
        kwargs={"n_classes": 2},
        kind="model 1.0.0 (logistic regression)",
        epochs=200,
        batch_size=700,
        lr=0.05,
        weight_decay=1e-3,
    )


def train_credit_v2() -> TrainedModel:
    """credit-risk 2.0.0: a small MLP with dropout on the standardised encoded inputs."""
    return _train_credit(
        version="2.0.0",
        architecture="mlp",
        kwargs={"hidden": [16], "n_classes": 2, "dropout": 0.3},
        kind="model 2.0.0 (multilayer perceptron, one hidden layer of 16)",
        # Chosen among a few settings of similar accuracy for the smaller gap between age
        # groups (the high-risk promotion gates measure it): 100 epochs at lr 1e-3.
        epochs=100,
        batch_size=64,
        lr=1e-3,
        weight_decay=1e-2,
    )


# --- digits -------------------------------------------------------------------------------------

DIGIT_LABELS = [str(d) for d in range(10)]
DIGIT_FEATURES = [f"px_{i}" for i in range(64)]

DIGITS_SIGNATURE: dict[str, Any] = Signature.model_validate(
    {
        "features": [
            {
                "name": name,
                "type": "float",
                "description": f"Ink in cell ({i // 8}, {i % 8}) of the 8x8 grid "
                "(row, column from the top left), 0 blank to 16 full.",
                "minimum": 0,
                "maximum": 16,
            }
            for i, name in enumerate(DIGIT_FEATURES)
        ],
        "output": {
            "labels": DIGIT_LABELS,
            "description": "Probability of each digit 0 to 9.",
        },
    }
).as_dict()

DIGITS_DATASET_NAME = "Optical Recognition of Handwritten Digits (scikit-learn digits)"
DIGITS_INTENDED_USE = (
    "Demonstration of a multi-class image model in Gatehouse: registration, approval, "
    "serving and monitoring of a model that touches no personal data. It recognises a "
    "handwritten digit given as an 8x8 grid of ink counts (0 to 16), e.g. drawn in the "
    "demo's digit pad."
)
DIGITS_LIMITATIONS = (
    "Trained on 1257 of the 1797 images of scikit-learn's digits data (the test part of the "
    "UCI handwritten digits set, written by 13 people in the 1990s, downsampled to 8x8). "
    "Digits drawn differently (other writing styles, off-centre, other scaling or "
    "thickness) can be misread; it always answers one of 0-9, even for an image that is no "
    "digit at all. Not fit for reading real documents such as cheques or forms."
)
DIGITS_ETHICAL = (
    "No personal data: the images are anonymous and the model has no protected attributes, "
    "so there are no training subjects to record and nothing for fairness gates to "
    "measure. Handwriting can in principle identify a writer; do not use the model or its "
    "inputs to recognise people."
)


def _digits_source() -> tuple[bytes, np.ndarray, np.ndarray]:
    """The CSV bytes of scikit-learn's bundled digits, the pixels (n, 64) and the digits (n,)."""
    raw = gzip.decompress(
        resources.files("sklearn.datasets").joinpath("data", "digits.csv.gz").read_bytes()
    )
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.float64)
    return raw, table[:, :-1], table[:, -1].astype(np.int64)


def digits_rows(n: int = 400) -> list[dict[str, float]]:
    """The first ``n`` digit images as predict rows (``px_0`` .. ``px_63``)."""
    _, pixels, _ = _digits_source()
    return [{f"px_{i}": float(v) for i, v in enumerate(image)} for image in pixels[:n]]


def train_digits_v1() -> TrainedModel:
    """digits 1.0.0: the small CNN on the 8x8 images."""
    raw, pixels, digits = _digits_source()
    index = np.arange(len(digits))
    train_idx, held_idx = train_test_split(
        index, test_size=VALIDATION_FRACTION, stratify=digits, random_state=SEED
    )
    train_idx, held_idx = np.sort(train_idx), np.sort(held_idx)
    kwargs: dict[str, Any] = {"n_classes": 10}
    with _deterministic_torch(SEED):
        model = architectures.build("digits_cnn", kwargs)
        _fit(
            model,
            pixels[train_idx],
            digits[train_idx],
            epochs=12,
            batch_size=64,
            lr=3e-3,
            weight_decay=1e-4,
            seed=SEED,
        )
        weights = _state_dict_bytes(model)
    held_out = pd.DataFrame(pixels[held_idx], columns=DIGIT_FEATURES)
    labels = pd.Series([DIGIT_LABELS[d] for d in digits[held_idx]])
    return TrainedModel(
        family="digits",
        version="1.0.0",
        architecture="digits_cnn",
        architecture_kwargs=kwargs,
        state_dict=weights,
        signature=copy.deepcopy(DIGITS_SIGNATURE),
        validation_csv=_validation_csv(held_out, DIGIT_FEATURES, labels),
        dataset_name=DIGITS_DATASET_NAME,
        dataset_version="UCI 1998 (doi:10.24432/C50P49), scikit-learn bundled copy",
        dataset_sha256=hashlib.sha256(raw).hexdigest(),
        training_subject_refs=[],
        description=(
            "Handwritten digit recogniser 1.0.0: a small convolutional network (two 3x3 "
            "convolutions, max-pooling, two dense layers) on 8x8 images of ink counts. "
            "Trained on a stratified 70 % of scikit-learn's 1797 digits; the other 30 % is "
            "its validation set."
        ),
        intended_use=DIGITS_INTENDED_USE,
        limitations=DIGITS_LIMITATIONS,
        ethical_considerations=DIGITS_ETHICAL,
    )
