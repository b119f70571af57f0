"""MNIST data loading (IDX parsing, offline errors, verified download), the UNet, the classifiers."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toyflow.data import mnist
from toyflow.data.augment import random_shift
from toyflow.data.mnist import load_mnist, read_idx
from toyflow.models import load_model, save_model
from toyflow.models.classifier import EvaluatorCNN, RewardCNN
from toyflow.models.unet import UNet

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


# ---------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array (N,) or (N, 28, 28) as IDX: magic 0x0000080{ndim}, big-endian dims, payload."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def fake_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    return images, (np.arange(n) % 10).astype(np.uint8)


def write_split(folder: Path, split: str, n: int = 12, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    images, labels = fake_digits(n)
    image_name, label_name = mnist.SPLIT_FILES[split]
    suffix = ".gz" if gz else ""
    write_idx(folder / f"{image_name}{suffix}", images)
    write_idx(folder / f"{label_name}{suffix}", labels)
    return images, labels


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """No TOYFLOW_DATA and a home without a cache, so nothing outside tmp_path is found."""
    monkeypatch.delenv(mnist.DATA_ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def shared_mnist() -> Path:
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST digits not found at {SHARED_MNIST} (expected ../shared beside the repository)")
    return SHARED_MNIST


# ---------------------------------------------------------------- IDX parsing


@settings(max_examples=20, deadline=None)
@given(n=st.integers(0, 5), gz=st.booleans(), seed=st.integers(0, 2**16))
def test_read_idx_round_trip(tmp_path_factory, n, gz, seed):
    folder = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
    suffix = ".gz" if gz else ""
    assert np.array_equal(read_idx(write_idx(folder / f"im{suffix}", images)), images)
    assert np.array_equal(read_idx(write_idx(folder / f"lb{suffix}", labels)), labels)


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_synthetic(tmp_path, no_env, layout, gz):
    folder = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    images, labels = write_split(folder, "test", n=12, gz=gz)
    data = load_mnist("test", tmp_path)
    assert data.images.shape == (12, 1, 28, 28) and data.images.dtype == torch.float32
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == labels.tolist()
    assert data.images[0, 0, 0, 0] == -1.0 and data.images[0, 0, 0, 1] == 1.0
    expected = torch.from_numpy(images).float()[:, None] / 127.5 - 1.0
    assert torch.allclose(data.images, expected)
    assert data.split == "test" and data.source == folder and len(data) == 12


def test_env_var_directory(tmp_path, monkeypatch):
    write_split(tmp_path / "from-env", "train5k", n=10)
    monkeypatch.setenv(mnist.DATA_ENV_VAR, str(tmp_path / "from-env"))
    assert len(load_mnist("train5k")) == 10
    assert mnist.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"  # the argument wins


def corrupt_variants(images: np.ndarray) -> dict[str, bytes]:
    good = idx_bytes(images)
    return {
        "wrong magic": struct.pack(">I", 0x00000903) + good[4:],
        "label magic on images": struct.pack(">I", 0x00000801) + good[4:],
        "truncated payload": good[:-7],
        "truncated header": good[:6],
        "trailing bytes": good + b"\x00",
        "wrong image size": struct.pack(">IIII", 0x803, len(images), 27, 29) + images.tobytes(),
    }


@pytest.mark.parametrize("kind", list(corrupt_variants(fake_digits(3)[0])))
def test_read_idx_rejects_corrupt_files(tmp_path, kind):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(corrupt_variants(fake_digits(3)[0])[kind]))
    with pytest.raises(ValueError) as err:
        read_idx(path)
    message = str(err.value)
    assert str(path) in message and "delete" in message and "download" in message


def test_read_idx_rejects_bad_gzip(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(fake_digits(3)[1]))[:-10])  # cut-off gzip stream
    with pytest.raises(ValueError, match="gzip"):
        read_idx(path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="delete it and download it again"):
        read_idx(path)


def test_mismatched_counts(tmp_path, no_env):
    images, labels = fake_digits(6)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:5])
    with pytest.raises(ValueError, match="6 images .* but 5 labels"):
        load_mnist("test", tmp_path)


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="train5k"):
        load_mnist("validation", tmp_path)


# ---------------------------------------------------------------- offline and download


def test_missing_files_offline_message(tmp_path, no_env):
    with pytest.raises(FileNotFoundError) as err:
        load_mnist("train", tmp_path)
    message = str(err.value)
    for needle in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        str(tmp_path),
        str(tmp_path / "MNIST" / "raw"),
        "data_dir=",
        "--data-dir",
        "TOYFLOW_DATA",
        "download=True",
    ):
        assert needle in message, needle


def test_default_directory_is_user_cache(no_env, tmp_path):
    assert mnist.resolve_data_dir() == tmp_path / "home" / ".cache" / "toyflow" / "mnist"


@pytest.fixture
def fake_server(monkeypatch):
    """Serve synthetic .gz files from the second mirror (the first one is 'down'); MD5s of those files."""
    payloads = {}
    for split in ("train", "test"):
        images, labels = fake_digits(20 if split == "train" else 10)
        for name, array in zip(mnist.SPLIT_FILES[split], (images, labels)):
            payloads[f"{name}.gz"] = gzip.compress(idx_bytes(array))
    monkeypatch.setattr(mnist, "MD5", {k: hashlib.md5(v).hexdigest() for k, v in payloads.items()})
    requested: list[str] = []

    def fetch(url: str, timeout: float = 60.0) -> bytes:
        requested.append(url)
        if url.startswith(mnist.MIRRORS[0]):
            raise OSError("mirror down")
        return payloads[url.rsplit("/", 1)[1]]

    monkeypatch.setattr(mnist, "fetch_url", fetch)
    return requested


def test_download_with_fallback_mirror(tmp_path, no_env, fake_server):
    data = load_mnist("test", tmp_path, download=True)
    assert len(data) == 10 and data.source == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert any(u.startswith(mnist.MIRRORS[0]) for u in fake_server)  # first mirror tried, then fallback
    fake_server.clear()
    assert len(load_mnist("test", tmp_path, download=True)) == 10
    assert fake_server == []  # present files are not fetched again
    paths = mnist.download_mnist(tmp_path)
    assert sorted(p.name for p in paths) == sorted(mnist.MD5)


def test_download_checksum_mismatch(tmp_path, no_env, monkeypatch):
    monkeypatch.setattr(mnist, "fetch_url", lambda url, timeout=60.0: b"garbage")
    with pytest.raises(ValueError) as err:
        load_mnist("test", tmp_path, download=True)
    message = str(err.value)
    assert "MD5 checksum mismatch" in message and mnist.MD5["t10k-images-idx3-ubyte.gz"] in message
    assert list(tmp_path.iterdir()) == []  # nothing (not even a temporary file) left behind


def test_download_network_down(tmp_path, no_env, monkeypatch):
    def offline(url, timeout=60.0):
        raise OSError("no network")

    monkeypatch.setattr(mnist, "fetch_url", offline)
    with pytest.raises(ConnectionError, match="no network"):
        load_mnist("train", tmp_path, download=True)
    with pytest.raises(ConnectionError, match="train-images-idx3-ubyte.gz"):  # train5k is rebuilt from train
        load_mnist("train5k", tmp_path, download=True)
    with pytest.raises(FileNotFoundError, match="toyflow data train5k"):  # offline: the message says how to rebuild
        load_mnist("train5k", tmp_path)


# ---------------------------------------------------------------- real digits


def test_shared_t10k(shared_mnist):
    data = load_mnist("test", shared_mnist)
    assert data.images.shape == (10000, 1, 28, 28) and data.images.dtype == torch.float32
    assert data.images.min() == -1.0 and data.images.max() == 1.0
    assert data.labels.min() == 0 and data.labels.max() == 9
    assert (torch.bincount(data.labels, minlength=10) > 0).all()


def test_shared_train5k(shared_mnist):
    if not (shared_mnist / "train5k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"train5k subset not found at {shared_mnist}")
    data = load_mnist("train5k", shared_mnist)
    assert data.images.shape == (5000, 1, 28, 28)
    assert torch.bincount(data.labels, minlength=10).tolist() == [500] * 10


# ---------------------------------------------------------------- augmentation


def test_random_shift():
    x = torch.full((64, 1, 28, 28), -1.0)
    x[:, 0, 14, 14] = 1.0
    g = torch.Generator().manual_seed(0)
    out = random_shift(x, 2, g)
    assert out.shape == x.shape
    where = (out[:, 0] == 1.0).nonzero()[:, 1:]  # (64, 2) pixel positions
    assert len(where) == 64 and ((where - 14).abs() <= 2).all()
    assert len(torch.unique(where, dim=0)) > 10  # offsets differ between images
    assert (out[:, 0] == -1.0).sum() == 64 * (28 * 28 - 1)  # filled with the background
    assert torch.equal(out, random_shift(x, 2, torch.Generator().manual_seed(0)))  # reproducible
    assert torch.equal(random_shift(x, 0, g), x)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        random_shift(x[:, 0], 2, g)


# ---------------------------------------------------------------- models


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter with small random values (zero-initialised layers would hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unet_shapes(dtype):
    model = randomize(UNet()).to(dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 28, 28, generator=g, dtype=dtype)
    t = torch.rand(3, generator=g, dtype=dtype)
    out = model(x, t)
    assert out.shape == (3, 1, 28, 28) and out.dtype == dtype and torch.isfinite(out).all()
    assert 1_000_000 <= n_params(model) <= 3_000_000
    if dtype == torch.float64:  # GroupNorm: a sample's velocity does not depend on its batch mates
        assert torch.allclose(model(x[1:2], t[1:2]), out[1:2], atol=1e-10)


def test_unet_untrained_predicts_zero():
    out = UNet()(torch.randn(2, 1, 28, 28), torch.rand(2))
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("shape", [(4, 784), (4, 3, 28, 28), (4, 1, 32, 32), (1, 28, 28)])
def test_unet_wrong_shape(shape):
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        UNet()(torch.zeros(shape), torch.zeros(shape[0]))


def test_unet_wrong_time_shape():
    with pytest.raises(ValueError, match=r"t must have shape \(B,\)"):
        UNet()(torch.zeros(4, 1, 28, 28), torch.zeros(4, 1))


@pytest.mark.parametrize("cls", [RewardCNN, EvaluatorCNN])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_classifier_shapes(cls, dtype):
    model = cls().to(dtype).eval()
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(2), dtype=dtype) * 2 - 1
    logits, feats = model(x), model.features(x)
    assert logits.shape == (5, 10) and logits.dtype == dtype
    assert feats.shape == (5, 128) and feats.dtype == dtype
    assert n_params(model) <= 300_000
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        model(x.view(5, 784))
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        model(x.expand(5, 3, 28, 28))


def test_reward_cnn_is_differentiable_and_batch_independent():
    model = randomize(RewardCNN(), seed=3).double()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2 - 1
    x.requires_grad_(True)
    logp = torch.log_softmax(model(x), dim=-1)[:, 7]
    (grad,) = torch.autograd.grad(logp.sum(), x)
    assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert torch.allclose(model(x[2:3]), model(x)[2:3], atol=1e-10)


@pytest.mark.parametrize(
    "make, inputs",
    [
        (lambda: UNet(channels=(16, 32, 48), mid_blocks=1), lambda x: (x, torch.linspace(0, 1, len(x)))),
        (lambda: RewardCNN(widths=(16, 32, 64)), lambda x: (x,)),
        (lambda: EvaluatorCNN(hidden=64, dropout=0.1), lambda x: (x,)),
    ],
)
def test_save_load_round_trip(tmp_path, make, inputs):
    model = randomize(make()).eval()
    save_model(tmp_path / "ckpt", model, note="test")
    loaded = load_model(tmp_path / "ckpt", arch=model.arch)
    assert type(loaded) is type(model) and loaded.config() == model.config() and not loaded.training
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(*inputs(x)), model(*inputs(x)))


def test_load_with_wrong_arch(tmp_path):
    save_model(tmp_path / "reward", RewardCNN())
    with pytest.raises(ValueError, match="'reward-cnn' model, not the expected 'unet'"):
        load_model(tmp_path / "reward", arch="unet")
    assert os.path.exists(tmp_path / "reward.safetensors")


# ---- growing a trained UNet (--init-from) ----------------------------------------------------
def test_grown_unet_computes_what_the_smaller_one_did():
    small = randomize(UNet(channels=(8, 16, 32), mid_blocks=1), seed=6).double().eval()
    big = UNet(channels=(8, 16, 32), mid_blocks=1, extra_blocks=(1, 2), mid_attention=True).double()
    new = big.load_smaller(small.state_dict(), small.config())
    # every added tensor belongs to an added block; every old one was loaded
    assert new and all(k.split(".")[0] in {"extra_down0", "extra_down1", "extra_up1", "extra_up0", "attention"} for k in new)
    assert set(new) | set(small.state_dict()) == set(big.state_dict())
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(big.eval()(x, t), small(x, t), atol=1e-12, rtol=0)
    # the added blocks are real: perturbing them changes the output
    randomize(big, seed=8)
    with torch.no_grad():
        assert not torch.allclose(big(x, t), small(x, t))


def test_grown_unet_config_round_trip(tmp_path):
    model = randomize(UNet(channels=(8, 16, 32), mid_blocks=1, extra_blocks=(1, 1), mid_attention=True)).eval()
    assert model.config()["extra_blocks"] == [1, 1] and model.config()["mid_attention"] is True
    save_model(tmp_path / "grown", model)
    loaded = load_model(tmp_path / "grown", arch="unet")
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    assert loaded.config() == model.config()
    with torch.no_grad():
        t = torch.tensor([0.2, 0.9])
        assert torch.equal(loaded(x, t), model(x, t))


def test_unet_growth_errors():
    small = UNet(channels=(8, 16, 32), mid_blocks=1)
    with pytest.raises(ValueError, match="channels=.*only extra_blocks and mid_attention may differ"):
        UNet(channels=(8, 16, 48), mid_blocks=1).load_smaller(small.state_dict(), small.config())
    big = UNet(channels=(8, 16, 32), mid_blocks=1, extra_blocks=(0, 1))
    with pytest.raises(ValueError, match="larger than this one"):
        small.load_smaller(big.state_dict(), big.config())
    with pytest.raises(ValueError, match="extra_blocks must be two counts"):
        UNet(extra_blocks=(1,))
    with pytest.raises(ValueError, match="extra_blocks must be two counts"):
        UNet(extra_blocks=(0, -1))


def test_cli_train_mnist_init_from_records_history(tmp_path, no_env, capsys):
    """--init-from: the grown model starts exactly where the smaller one ended, and the JSON keeps
    every command that made its weights."""
    import json

    from toyflow.cli import main

    write_split(tmp_path / "data", "test", n=16)
    common = ["train", "mnist", "--data-dir", str(tmp_path / "data"), "--split", "test", "--channels", "8", "16", "32",
              "--mid-blocks", "1", "--batch-size", "4", "--quiet"]
    assert main(common + ["--steps", "3", "--out", str(tmp_path / "small")]) == 0
    # 0 steps of training on top: the grown model is the small one plus identity blocks
    assert main(common + ["--steps", "1", "--lr", "0", "--extra-blocks", "1", "0", "--mid-attention",
                          "--init-from", str(tmp_path / "small"), "--out", str(tmp_path / "big")]) == 0
    cfg = json.loads((tmp_path / "big.json").read_text())
    assert cfg["init_from"] == str(tmp_path / "small") and cfg["dataset"] == "mnist-test"
    # the recorded commands run anywhere: the split written out, no machine-specific data folder
    assert cfg["command"].startswith("toyflow train mnist --split test --channels 8 16 32")
    assert "--data-dir" not in cfg["command"] and str(tmp_path / "data") not in cfg["command"]
    assert "--data-dir" not in cfg["earlier_commands"][0]
    assert len(cfg["earlier_commands"]) == 1 and "--out " + str(tmp_path / "small") in cfg["earlier_commands"][0]
    assert cfg["earlier_commands"][0].endswith("(to step 3)") and "--init-from" in cfg["command"]
    small, big = load_model(tmp_path / "small"), load_model(tmp_path / "big")
    assert big.config()["extra_blocks"] == [1, 0] and big.config()["mid_attention"]
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(10))
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        assert torch.allclose(big(x, t), small(x, t), atol=1e-6)
    save_model(tmp_path / "clf", RewardCNN())
    capsys.readouterr()
    assert main(common + ["--steps", "1", "--init-from", str(tmp_path / "clf"), "--out", str(tmp_path / "x")]) != 0
    assert "holds a 'reward-cnn' model, not a UNet flow" in capsys.readouterr().err


def test_reflow_pairs_then_cli_train_on_them(tmp_path, no_env, capsys):
    """make_reflow_pairs writes a flow's own ODE solutions with their noises; `toyflow train mnist
    --pairs` trains on exactly those pairs and records where they came from."""
    import json

    from toyflow import dynamics
    from toyflow.cli import main
    from toyflow.train import CoupledPairs, make_reflow_pairs

    write_split(tmp_path / "data", "test", n=16)
    common = ["train", "mnist", "--channels", "8", "16", "32", "--mid-blocks", "1", "--batch-size", "4", "--quiet"]
    assert main(common + ["--data-dir", str(tmp_path / "data"), "--split", "test", "--steps", "2",
                          "--out", str(tmp_path / "f")]) == 0
    flow = load_model(tmp_path / "f")
    make_reflow_pairs(flow, tmp_path / "pairs", generator_seed=3, steps=2, shards=2, source="f", progress=False)
    pairs = CoupledPairs.from_folder(tmp_path / "pairs")
    assert pairs.data.shape == pairs.noise.shape == (2000, 1, 28, 28)
    assert not list((tmp_path / "pairs").glob("*.tmp"))  # written atomically
    rows = [0, 999, 1000, 1999]  # both shards: each sample is the flow's 2-step ODE solution from its noise
    with torch.no_grad():
        again = dynamics.sample(flow, pairs.noise[rows], "linear", steps=2).x
    assert torch.allclose(again, pairs.data[rows], atol=1e-5)
    first = torch.randn(250, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    assert torch.equal(pairs.noise[:250], first)  # the seed fixes the noises
    # interrupted after one shard, then run again: the same pairs
    make_reflow_pairs(flow, tmp_path / "again", generator_seed=3, steps=2, shards=1, source="f", progress=False)
    make_reflow_pairs(flow, tmp_path / "again", generator_seed=3, steps=2, shards=2, source="f", progress=False)
    resumed = CoupledPairs.from_folder(tmp_path / "again")
    assert torch.equal(resumed.noise, pairs.noise) and torch.equal(resumed.data, pairs.data)
    # pairs of another seed in the same folder are refused
    make_reflow_pairs(flow, tmp_path / "mixed", generator_seed=3, steps=2, shards=1, source="f", progress=False)
    make_reflow_pairs(flow, tmp_path / "mixed", generator_seed=4, steps=2, shards=2, source="f", progress=False)
    with pytest.raises(ValueError, match="keep the pairs of one flow, steps and seed"):
        CoupledPairs.from_folder(tmp_path / "mixed")

    # no --data-dir: the pairs are the training data
    assert main(common + ["--pairs", str(tmp_path / "pairs"), "--init-from", str(tmp_path / "f"), "--steps", "2",
                          "--out", str(tmp_path / "g")]) == 0
    cfg = json.loads((tmp_path / "g.json").read_text())
    assert cfg["dataset"] == f"reflow-pairs (2000 pairs from {tmp_path / 'pairs'})"
    assert "--pairs" in cfg["command"] and cfg["init_from"] == str(tmp_path / "f")
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    assert main(common + ["--pairs", str(tmp_path / "empty"), "--steps", "1", "--out", str(tmp_path / "h")]) != 0
    assert "no pairs-*.safetensors shards" in capsys.readouterr().err
    assert main(common + ["--pairs", str(tmp_path / "pairs"), "--data-dir", str(tmp_path / "data"), "--steps", "1",
                          "--out", str(tmp_path / "h")]) != 0
    assert "--pairs replaces the digits" in capsys.readouterr().err


# ---------------------------------------------------------------- train5k digests, held-out splits, defaults


def fake_training_split(per_class: int = 40, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in for the official training split: random digits, classes interleaved."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(10 * per_class, 28, 28), dtype=np.uint8)
    labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), per_class))
    return images, labels


@pytest.fixture
def small_train5k(tmp_path, monkeypatch, no_env):
    """A training split of 400 digits on disk, and a shipped manifest naming 8 of them per class
    (train5k in miniature; val5k takes 5 per class)."""
    images, labels = fake_training_split()
    rng = np.random.default_rng(2)
    pick = np.concatenate([rng.choice(np.flatnonzero(labels == c), 8, replace=False) for c in range(10)])
    manifest = mnist.make_train5k_manifest(images[pick], labels[pick])
    path = tmp_path / "manifest.json"
    path.write_text(__import__("json").dumps(manifest))
    monkeypatch.setattr(mnist, "TRAIN5K_MANIFEST", path)
    monkeypatch.setattr(mnist, "PER_CLASS", 5)
    data = tmp_path / "data"
    write_idx(data / "train-images-idx3-ubyte.gz", images)
    write_idx(data / "train-labels-idx1-ubyte.gz", labels)
    return {"dir": data, "images": images, "labels": labels, "pick": pick, "manifest": manifest}


def test_shipped_train5k_digests():
    manifest = mnist.train5k_manifest()
    assert manifest["count"] == 5000 and sorted(manifest["digits"]) == [str(c) for c in range(10)]
    digests = [d for c in range(10) for d in manifest["digits"][str(c)]]
    assert all(len(manifest["digits"][str(c)]) == 500 for c in range(10))
    assert len(set(digests)) == 5000 and all(len(d) == 16 and int(d, 16) >= 0 for d in digests)
    assert mnist.TRAIN5K_MANIFEST.stat().st_size < 150_000  # a small text file


def test_shared_train5k_matches_the_shipped_digests(shared_mnist):
    if not (shared_mnist / "train5k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"train5k subset not found at {shared_mnist}")
    report = mnist.verify_train5k(shared_mnist)
    assert report.ok and report.problems == ()
    # and the official test split shares no digit with it
    test = read_idx(shared_mnist / "t10k-images-idx3-ubyte.gz")
    shipped = {d for ds in mnist.train5k_manifest()["digits"].values() for d in ds}
    assert not shipped & {mnist.image_digest(im) for im in test}


def test_rebuild_train5k_from_the_training_split(small_train5k, tmp_path):
    report = mnist.rebuild_train5k(small_train5k["dir"], tmp_path / "rebuilt")
    assert report.ok and [p.name for p in report.paths] == ["train5k-images-idx3-ubyte.gz", "train5k-labels-idx1-ubyte.gz"]
    images = small_train5k["images"]
    # the rebuilt digits are the manifest's, in its order, found where they sit in the training split
    assert sorted(report.indices) == sorted(small_train5k["pick"].tolist())
    got = read_idx(report.paths[0])
    assert np.array_equal(got, images[list(report.indices)])
    assert np.array_equal(read_idx(report.paths[1]), np.repeat(np.arange(10), 8))
    raw = gzip.decompress(report.paths[0].read_bytes())
    assert hashlib.sha256(raw).hexdigest() == small_train5k["manifest"]["images_idx_sha256"]
    again = tmp_path / "again"
    mnist.rebuild_train5k(small_train5k["dir"], again)
    assert (again / report.paths[0].name).read_bytes() == report.paths[0].read_bytes()  # byte-identical gzip
    assert mnist.verify_train5k(tmp_path / "rebuilt").ok
    data = load_mnist("train5k", tmp_path / "rebuilt")
    assert len(data) == 80 and torch.bincount(data.labels).tolist() == [8] * 10


def test_verify_train5k_names_what_differs(small_train5k, tmp_path):
    images = small_train5k["images"]
    report = mnist.rebuild_train5k(small_train5k["dir"], tmp_path / "copy")
    bad = read_idx(report.paths[0])
    bad[3, 10, 10] ^= 1  # one pixel of one digit of class 0
    write_idx(report.paths[0], bad)
    check = mnist.verify_train5k(tmp_path / "copy")
    assert not check.ok and len(check.problems) == 1 and check.problems[0].startswith("class 0: 1 digit(s) not in train5k")
    swapped = images[list(report.indices)]  # the good copy, with class 0's first two digits swapped
    swapped[[0, 1]] = swapped[[1, 0]]
    write_idx(report.paths[0], swapped)
    assert mnist.verify_train5k(tmp_path / "copy").problems == ("class 0: the right digits in another order",)


def test_rebuild_refuses_another_training_split(small_train5k, tmp_path):
    images, labels = small_train5k["images"].copy(), small_train5k["labels"]
    images[small_train5k["pick"][0]] ^= 7  # a train5k digit that this copy does not have
    write_idx(tmp_path / "other" / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "other" / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(ValueError, match=r"1 of the 80 train5k digits are not in this training split.*--download"):
        mnist.rebuild_train5k(tmp_path / "other")
    assert not list((tmp_path / "other").glob("train5k*"))


def test_download_rebuilds_train5k(small_train5k, tmp_path, monkeypatch):
    payloads = {p.name: p.read_bytes() for p in small_train5k["dir"].iterdir()}
    monkeypatch.setattr(mnist, "MD5", {**mnist.MD5, **{k: hashlib.md5(v).hexdigest() for k, v in payloads.items()}})
    monkeypatch.setattr(mnist, "fetch_url", lambda url, timeout=60.0: payloads[url.rsplit("/", 1)[1]])
    data = load_mnist("train5k", tmp_path / "fresh", download=True)
    assert len(data) == 80 and mnist.verify_train5k(tmp_path / "fresh").ok
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == sorted(
        [f"{n}.gz" for n in mnist.SPLIT_FILES["train"] + mnist.SPLIT_FILES["train5k"]])


def test_held_out_splits(small_train5k):
    images, labels = small_train5k["images"], small_train5k["labels"]
    train5k = {mnist.image_digest(im) for im in images[small_train5k["pick"]]}
    val = load_mnist("val5k", small_train5k["dir"])
    rest = load_mnist("train50k", small_train5k["dir"])
    assert torch.bincount(val.labels).tolist() == [5] * 10 and bool((val.labels.diff() >= 0).all())
    assert len(rest) == 400 - 80 - 50

    def digests(d):
        return [mnist.image_digest(((im[0] + 1) * 127.5).round().to(torch.uint8).numpy()) for im in d.images]

    v, r = digests(val), digests(rest)
    assert not (set(v) & set(r)) and not (set(v) & train5k) and not (set(r) & train5k)
    assert len(set(v) | set(r) | train5k) == 400  # together they are the whole training split
    # val5k: per class the smallest digests outside train5k, whatever the order of the training split
    for c in range(10):
        outside = sorted(mnist.image_digest(im) for im, lab in zip(images, labels)
                         if lab == c and mnist.image_digest(im) not in train5k)
        assert [d for d, lab in zip(v, val.labels.tolist()) if lab == c] == outside[:5]
    # train50k keeps the training split's order
    order = [mnist.image_digest(im) for im in images]
    assert r == [d for d in order if d in set(r)]


def test_mnist_defaults_train_on_training_data(tmp_path):
    from toyflow.cli import _MNIST_SPLITS, build_parser

    assert _MNIST_SPLITS == mnist.SPLITS
    parser = build_parser()
    assert parser.parse_args(["train", "mnist"]).split == "train50k"
    assert parser.parse_args(["train", "mnist", "--split", "test"]).split == "test"  # only when asked
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "mnist", "--split", "t10k"])


def test_cli_classifier_records_its_split(tmp_path, no_env, monkeypatch):
    import toyflow.train as T
    from toyflow.cli import main

    seen = {}

    def stand_in(model, images, labels, cfg, **kw):
        seen.update(n=len(labels), **kw["extra_config"])
        raise RuntimeError("stop")

    monkeypatch.setattr(T, "train_classifier", stand_in)
    write_split(tmp_path / "data", "train5k", n=20)
    main(["train", "classifier", "--role", "evaluator", "--data-dir", str(tmp_path / "data"), "--steps", "1",
          "--out", str(tmp_path / "e")])
    assert seen["dataset"] == "mnist-train5k" and seen["n"] == 20
    assert seen["command"] == f"toyflow train classifier --split train5k --role evaluator --steps 1 --out {tmp_path / 'e'}"


def test_cli_data_train5k(small_train5k, tmp_path, capsys):
    from toyflow.cli import main

    out = tmp_path / "made"
    assert main(["data", "train5k", "--data-dir", str(small_train5k["dir"]), "--out", str(out),
                 "--indices", str(tmp_path / "idx.txt")]) == 0
    assert "checked it against the shipped digests" in capsys.readouterr().out
    assert [int(v) for v in (tmp_path / "idx.txt").read_text().split()] == list(
        mnist.rebuild_train5k(small_train5k["dir"], tmp_path / "x").indices)
    assert main(["data", "train5k", "--check", "--data-dir", str(out)]) == 0
    assert "match the shipped digests" in capsys.readouterr().out
    bad = read_idx(out / "train5k-images-idx3-ubyte.gz")
    bad[-1] = 0
    write_idx(out / "train5k-images-idx3-ubyte.gz", bad)
    assert main(["data", "train5k", "--check", "--data-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "does not match the shipped digests" in err and "class 9" in err and "toyflow data train5k" in err
