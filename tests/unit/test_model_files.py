"""Result files cannot run code: ``model.pt`` and the training checkpoint are read with
``torch.load(weights_only=True)``; any other file in their place is refused (a model: one
InputError naming it) or ignored (a checkpoint: training starts from scratch), and a pickle that
would call something is never run."""

import io
import logging
import pickle
import re
import zipfile

import numpy as np
import pytest
import torch

from robustmaps.io import InputError
from robustmaps.training import TrainConfig, train
from robustmaps.models import build_model
from robustmaps.trained import load_trained
from robustmaps.checkpoints import plain

SHAPE = (12, 14, 12)
CFG = TrainConfig(architecture={"name": "paper", "n_blocks": 2, "filters": 4, "dropout": 0.2},
                  lr=3e-3, weight_decay=0.0, batch_size=4, max_epochs=3, patience=5)


class SideEffect:
    """Unpickling it creates ``path`` (what ``os.system`` could do, without a shell)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def real_meta(trained_model) -> dict:
    return torch.load(trained_model["model"], map_location="cpu", weights_only=True)


def write_bad(kind: str, path, marker, trained_model) -> None:
    """Write a file of ``kind`` that is not a trained model of this workflow at ``path``."""
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("participant_id\tsession_id\nsub-01\tses-M000\n")
    elif kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "zip archive":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "not a model")
    elif kind == "npy":
        with open(path, "wb") as fh:
            np.save(fh, np.zeros((2, 3), np.float32))
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "dict without model keys":
        meta = real_meta(trained_model)
        del meta["state_dict"], meta["classes"]
        torch.save(meta, path)
    elif kind == "weights of another architecture":
        meta = real_meta(trained_model)
        other = build_model({"name": "paper", "n_blocks": 2, "filters": 3, "dropout": 0.2}, tuple(meta["in_shape"]))
        meta["state_dict"] = other.state_dict()
        torch.save(meta, path)
    elif kind == "pickle with a side effect":
        path.write_bytes(pickle.dumps({"architecture": SideEffect(marker)}))
    elif kind == "torch file with a side effect":
        meta = real_meta(trained_model)
        meta["architecture"] = SideEffect(marker)
        torch.save(meta, path)
    elif kind == "legacy torch file with a side effect":
        torch.save({"architecture": SideEffect(marker)}, path, _use_new_zipfile_serialization=False)
    else:
        raise ValueError(kind)


BAD = ["empty", "text", "random bytes", "zip archive", "npy", "tensor", "dict without model keys",
       "weights of another architecture", "pickle with a side effect", "torch file with a side effect",
       "legacy torch file with a side effect"]


@pytest.mark.parametrize("kind", BAD)
def test_a_file_that_is_not_a_trained_model_is_one_input_error(kind, trained_model, tmp_path):
    path, marker = tmp_path / "model.pt", tmp_path / "side-effect"
    write_bad(kind, path, marker, trained_model)
    with pytest.raises(InputError, match=re.escape(f"{path}: not a trained model of this workflow (")) as err:
        load_trained(path)
    message = str(err.value)
    assert len(message) < len(str(path)) + 250 and "\n" not in message  # the reason is shortened
    assert "add_safe_globals" not in message  # not advised to allow the code it refused
    assert not marker.exists()  # nothing ran


def test_a_missing_model_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not a trained model of this workflow"):
        load_trained(tmp_path / "absent.pt")


def test_a_real_model_loads_with_plain_metadata_and_predicts_as_its_saved_weights(trained_model):
    model, meta = load_trained(trained_model["model"])
    assert meta["classes"] == ["CN", "AD"] and type(meta["torch"]) is str
    assert type(meta["validation_balanced_accuracy"]) is float and all(type(n) is int for n in meta["in_shape"])
    # the same network, rebuilt by hand from the file's weights, gives the same outputs
    raw = real_meta(trained_model)
    net = build_model(raw["architecture"], tuple(raw["in_shape"]))
    net.load_state_dict(raw["state_dict"])
    net.eval()
    x = torch.from_numpy(trained_model["images"][36:].astype(np.float32))[:, None]
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=0, atol=0)
        pred = model(x).argmax(1).numpy()
    assert (pred == trained_model["labels"][36:]).mean() >= 0.8


def test_plain_converts_numpy_and_str_subclasses_and_refuses_objects():
    state = torch.nn.Linear(2, 1).state_dict()
    out = plain({"a": np.float64(0.5), "b": [np.int64(3), np.array([1.0, 2.0])], "c": (True, None),
                 "v": torch.__version__, "t": torch.ones(2), "s": state})
    assert out["a"] == 0.5 and type(out["a"]) is float and type(out["b"][0]) is int
    assert out["b"][1] == [1.0, 2.0] and out["c"] == (True, None) and type(out["v"]) is str
    assert out["s"] is state  # a module's state dict is kept as torch wrote it
    buffer = io.BytesIO()
    torch.save(out, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["v"] == str(torch.__version__)
    with pytest.raises(TypeError, match="not a plain type"):
        plain({"x": object()})


# ------------------------------------------------------------------------------ checkpoints
def store_and_labels(n=24, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    store = rng.normal(0.5, 0.1, (n, *SHAPE)).astype(np.float16)
    store[labels == 1, 3:7, 4:8, 3:7] -= 0.3
    return store, labels


def run(checkpoint, **kw):
    store, labels = store_and_labels()
    rows = np.arange(len(labels))
    return train(store, rows[:16], labels[:16], rows[16:], labels[16:], CFG, seed=5, checkpoint=checkpoint,
                 threads=1, fingerprint="fp", **kw)


def test_checkpoint_loads_weights_only_and_a_resumed_run_ends_as_an_uninterrupted_one(tmp_path):
    best_full, hist_full = run(tmp_path / "full.ckpt")
    _, hist_part = run(tmp_path / "resumed.ckpt", stop_after=1)
    assert len(hist_part) == 1
    ck = torch.load(tmp_path / "resumed.ckpt", weights_only=True)
    assert ck["epoch"] == 0 and ck["stopper"]["patience"] == 5 and ck["history"] == hist_part
    best, hist = run(tmp_path / "resumed.ckpt")
    assert [h["train_loss"] for h in hist] == [h["train_loss"] for h in hist_full]
    assert best["epoch"] == best_full["epoch"]
    assert all(torch.equal(best["state"][k], best_full["state"][k]) for k in best_full["state"])


@pytest.mark.parametrize("kind", ["empty", "text", "tensor", "pickle with a side effect",
                                  "torch file with a side effect"])
def test_a_checkpoint_that_is_not_safe_to_load_is_ignored_and_never_run(kind, trained_model, tmp_path, caplog):
    checkpoint, marker = tmp_path / "run.ckpt", tmp_path / "side-effect"
    write_bad(kind, checkpoint, marker, trained_model)
    with caplog.at_level(logging.INFO, logger="robustmaps.training"):
        _, hist = run(checkpoint, stop_after=1)
    assert not marker.exists()
    assert [h["epoch"] for h in hist] == [0]  # from scratch
    assert f"ignoring checkpoint {checkpoint}: not a checkpoint of this workflow" in caplog.text
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 0  # replaced by a real one
