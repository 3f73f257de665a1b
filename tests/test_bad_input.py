"""Bad input at every door: every public op on every available backend, and every command.

Hypothesis draws a valid small call, then spoils one thing: an array's layout (Fortran order,
strides, negative strides, read-only, swapped byte order), its dtype, its number of axes, its
shape against the other arguments, its values (NaN, infinity, labels out of range), an empty
axis, a huge shape (a zero-stride view larger than the machine's memory, which must be refused
before anything is allocated), or a scalar argument (size, ignore_index, num_classes, weights,
temperature, method, the CRF's settings, backend).

Expected of every op call:
  * no crash and no hang: the calls run in a worker process (a segfault or a call running
    past CALL_TIMEOUT fails the example instead of killing pytest);
  * either a result (for the layout and read-only variants: equal to the plain call's) or a
    ValueError/TypeError whose message names the spoilt argument; for ndim, shape mismatch,
    NaN probabilities and huge shapes only the error.
And of every command (run through click in the worker): exit status 1 or 2, a message on stderr
that names the bad option or path, no traceback, and no temporary or half-written file left in
its output folder.

Examples per op and backend: 25 here (`make test`); SEGKIT_BAD_INPUT_LONG=1 (`make
test-bad-input-long`) runs 400, unseeded. The commands' table of bad command lines is small and
runs whole in both.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import re
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segkit import _backend

LONG = os.environ.get("SEGKIT_BAD_INPUT_LONG", "") not in ("", "0")
PROFILE = settings(max_examples=400 if LONG else 25, deadline=None, derandomize=not LONG,
                   suppress_health_check=[HealthCheck.too_slow,
                                          HealthCheck.function_scoped_fixture,
                                          HealthCheck.data_too_large])
#: seconds one call may take in the worker (first calls compile Numba kernels: cached on disk)
CALL_TIMEOUT = 180
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: the worker's address-space limit: an accidental huge allocation fails there, not the machine
WORKER_MEMORY = 8 << 30
BACKENDS = [b for b in ("numpy", "numba", "cpp") if _backend.backend_info(b).available]


def test_cuda_is_skipped_with_the_reason():
    info = _backend.backend_info("cuda")
    if not info.available:
        pytest.skip(f"cuda backend unavailable here, its bad-input runs skipped: {info.reason}")
    pytest.skip("the bad-input properties run on the host backends only; scripts/gpu_check.sh "
                "runs the CUDA paths")


# ---- the worker process ----------------------------------------------------------------------

@dataclass
class A:
    """An array argument as the worker builds it: `data` (plain, C order) seen through
    `layout`: c, f, strided, reversed, readonly, swapped, or huge (a zero-stride view of
    shape `shape`)."""
    data: np.ndarray | None
    layout: str = "c"
    shape: tuple = ()
    dtype: str = "uint8"


def _view(a: A) -> np.ndarray:
    x = a.data
    if a.layout == "huge":
        return np.broadcast_to(np.zeros((), a.dtype), a.shape)
    if a.layout == "c":
        return np.ascontiguousarray(x)
    if a.layout == "f":
        return np.asfortranarray(x)
    if a.layout == "strided":
        wide = np.repeat(x, 2, axis=-1) if x.ndim else x
        return wide[..., ::2] if x.ndim else wide
    if a.layout == "reversed":
        return np.flip(x, -1).copy()[..., ::-1] if x.ndim else x
    if a.layout == "readonly":
        y = x.copy()
        y.flags.writeable = False
        return y
    if a.layout == "swapped":
        return x.astype(x.dtype.newbyteorder())
    raise AssertionError(a.layout)


def _build(x, plain=False):
    if isinstance(x, A):
        return _view(A(x.data)) if plain and x.layout != "huge" else _view(x)
    if isinstance(x, list):
        return [_build(v, plain) for v in x]
    if isinstance(x, tuple):
        return tuple(_build(v, plain) for v in x)
    if isinstance(x, dict):
        return {k: _build(v, plain) for k, v in x.items()}
    return x


def _same(a, b) -> bool:
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(
            a, b, equal_nan=a.dtype.kind in "fc")
    if hasattr(a, "__dataclass_fields__"):
        return _same(vars(a), vars(b))
    return a == b or (a != a and b != b)


def _outcome(fn, args, kwargs):
    try:
        return "ok", fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        return "raise", exc


def _describe(status, value):
    if status == "ok":
        return ("ok",)
    exc = value
    return ("raise", type(exc).__name__, isinstance(exc, (ValueError, TypeError)), str(exc),
            "".join(traceback.format_exception(exc))[-2000:])


def _run_op(op, args, kwargs, compare):
    import segkit

    fn = getattr(segkit, op)
    status, value = _outcome(fn, _build(args), _build(kwargs))
    out = _describe(status, value)
    if status == "ok" and compare:
        base_status, base = _outcome(fn, _build(args, plain=True), _build(kwargs, plain=True))
        out = ("ok", base_status == "ok" and _same(value, base))
    return out


def _run_cli(argv, cwd):
    from click.testing import CliRunner

    from segkit.cli import main

    os.chdir(cwd)
    result = CliRunner().invoke(main, argv, catch_exceptions=True)
    exc = result.exception
    uncaught = None if exc is None or isinstance(exc, SystemExit) else "".join(
        traceback.format_exception(exc))[-3000:]
    return ("cli", result.exit_code, result.stdout, result.stderr, uncaught)


def _serve(conn):
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import segkit  # noqa: F401 - imported once, before the first request

    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        kind, *rest = request
        try:
            conn.send(_run_op(*rest) if kind == "op" else _run_cli(*rest))
        except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
            conn.send(("raise", type(exc).__name__, False, str(exc), traceback.format_exc()))


class Worker:
    def __init__(self):
        self._start()

    def _start(self):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,))  # not daemonic: jobs start pools
        self.proc.start()
        child.close()

    def close(self):
        self.conn.close()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()

    def call(self, *request):
        self.conn.send(request)
        if not self.conn.poll(CALL_TIMEOUT):
            self.proc.kill()
            self.proc.join()
            self._start()
            pytest.fail(f"hang: no answer within {CALL_TIMEOUT} s to {request!r:.500}")
        try:
            return self.conn.recv()
        except EOFError:
            self.proc.join()
            code = self.proc.exitcode
            self._start()
            pytest.fail(f"crash: the worker died (exit status {code}) on {request!r:.500}")


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


# ---- ops: a valid call, then one thing spoilt ------------------------------------------------

C, HUGE_SIDE = 4, 1 << 20  # a (HUGE_SIDE, HUGE_SIDE) plane is 2^40 pixels


@dataclass
class Call:
    op: str
    args: list
    kwargs: dict
    arrays: dict            #: argument name -> "labels" | "probs" | "image" | "models"
    refuses_nan: tuple = ()  #: probability arguments whose NaN must be refused
    must_raise: bool = False
    compare: bool = False
    name: str = ""          #: the argument the error must name
    what: str = ""
    extra: dict = field(default_factory=dict)

    def get(self, name):
        return self.args[self.extra["pos"][name]] if name in self.extra["pos"] else \
            self.kwargs[name]

    def set(self, name, value):
        if name in self.extra["pos"]:
            self.args[self.extra["pos"][name]] = value
        else:
            self.kwargs[name] = value


def _labels(rng, shape, classes=C):
    return rng.integers(0, classes, shape).astype(np.uint8)


def _probs(rng, shape, axis):
    p = rng.random(shape).astype(np.float32) + 0.01
    return (p / p.sum(axis, keepdims=True)).astype(np.float32)


def base_call(op, rng, n, h, w, backend) -> Call:
    batch = (n,) if n else ()
    lab = _labels(rng, batch + (h, w))
    pro = _probs(rng, batch + (C, h, w), len(batch))
    if op == "mode_filter":
        return Call(op, [A(lab)], dict(size=3, ignore_index=None, backend=backend),
                    {"labels": "labels"}, extra=dict(pos={"labels": 0}))
    if op == "confusion_matrix":
        return Call(op, [A(lab), A(_labels(rng, lab.shape)), C],
                    dict(ignore_index=255, backend=backend),
                    {"pred": "labels", "gt": "labels"},
                    extra=dict(pos={"pred": 0, "gt": 1, "num_classes": 2}))
    models = [A(_probs(rng, batch + (C, h, w), len(batch))) for _ in range(2)]
    if op == "soft_vote":
        return Call(op, [models], dict(weights=[1.0, 2.0], backend=backend),
                    {"probs": "models"}, refuses_nan=("probs",), extra=dict(pos={"probs": 0}))
    if op == "vote_confusion":
        return Call(op, [models, A(lab)], dict(weights=[1.0, 2.0], bias=None, backend=backend),
                    {"probs": "models", "gt": "labels"},  # NaN: see the README's limits
                    extra=dict(pos={"probs": 0, "gt": 1}))
    if op in ("label_issues", "label_quality"):
        kw = dict(ignore_index=None, backend=backend)
        if op == "label_quality":
            kw.update(method="softmin", temperature=0.1)
        return Call(op, [A(lab), A(pro)], kw, {"labels": "labels", "probs": "probs"},
                    refuses_nan=("probs",), extra=dict(pos={"labels": 0, "probs": 1}))
    if op in ("convcrf", "convcrf_labels"):
        img = rng.integers(0, 256, batch + (3, h, w)).astype(np.uint8)
        return Call(op, [A(pro), A(img)],
                    dict(num_iter=1, filter_size=3, blur=1, unary_kind="probs",
                         backend=backend),
                    {"unary": "probs", "image": "image"}, refuses_nan=("unary",),
                    extra=dict(pos={"unary": 0, "image": 1}))
    raise AssertionError(op)


OPS = ["mode_filter", "confusion_matrix", "soft_vote", "vote_confusion", "label_issues",
       "label_quality", "convcrf", "convcrf_labels"]
#: bad values of the scalar arguments (each must be refused, naming the argument)
BAD_SCALARS = {
    "size": [0, 2, -3, 3.0, "3", None, True, 1 << 40],
    "ignore_index": [1.5, "255", -(1 << 70), [255]],
    "num_classes": [0, -1, 4.0, "4", True, None, 1 << 40],
    "weights": [[1.0], [1.0, float("nan")], [1.0, -1.0], [0.0, 0.0], "1,2", [1.0, float("inf")]],
    "bias": [[0.0], [float("nan")] * C, "0"],
    "temperature": [float("nan"), -1.0, "0.1", None],
    "method": ["mean", 3, None],
    "num_iter": [0, -1, 1.5, "5"],
    "filter_size": [0, 2, -5, 3.5],
    "blur": [0, 3, -2, 1.5],
    "unary_kind": ["logit", 1],
    "backend": ["cuda9", "", None, 3],
}
OP_SCALARS = {
    "mode_filter": ["size", "ignore_index", "backend"],
    "confusion_matrix": ["num_classes", "ignore_index", "backend"],
    "soft_vote": ["weights", "backend"],
    "vote_confusion": ["weights", "bias", "ignore_index", "backend"],
    "label_issues": ["ignore_index", "backend"],
    "label_quality": ["ignore_index", "temperature", "method", "backend"],
    "convcrf": ["num_iter", "filter_size", "blur", "unary_kind", "backend"],
    "convcrf_labels": ["num_iter", "filter_size", "blur", "backend"],
}
ODD_DTYPES = ["bool", "int8", "uint32", "int64", "float16", "float32", "float64", "complex64",
              "object"]
KINDS = ["layout", "dtype", "ndim", "mismatch", "values", "empty", "huge", "scalar", "type"]


def _arrays_of(call, name):
    """The A records of argument `name` (one, or the models of a list)."""
    value = call.get(name)
    return value if isinstance(value, list) else [value]


def spoil(call: Call, data) -> Call:
    names = list(call.arrays)
    kind = data.draw(st.sampled_from(KINDS), label="kind")
    if kind == "scalar":
        name = data.draw(st.sampled_from(OP_SCALARS[call.op]), label="scalar")
        value = data.draw(st.sampled_from(BAD_SCALARS[name]), label="value")
        call.set(name, value)
        call.must_raise, call.name, call.what = True, name, f"{name}={value!r}"
        return call
    name = data.draw(st.sampled_from(names), label="array")
    role = call.arrays[name]
    targets = _arrays_of(call, name)
    index = data.draw(st.integers(0, len(targets) - 1), label="index")
    a = targets[index]
    call.name = name
    if kind == "layout":
        a.layout = data.draw(st.sampled_from(["f", "strided", "reversed", "readonly",
                                              "swapped"]), label="layout")
        call.compare, call.what = True, f"{name} layout {a.layout}"
    elif kind == "dtype":
        dtype = data.draw(st.sampled_from(ODD_DTYPES), label="dtype")
        a.data = a.data.astype(dtype)
        call.what = f"{name} dtype {dtype}"
    elif kind == "ndim":
        a.data = a.data[..., 0, 0] if data.draw(st.booleans()) else a.data[None, None, None]
        call.must_raise, call.what = True, f"{name} shape {a.data.shape}"
    elif kind == "mismatch":
        if len(names) == 1 and role != "models":
            return spoil_scalar_instead(call, data)
        a.data = np.concatenate([a.data, a.data[..., :1]], axis=-1)
        call.must_raise, call.what = True, f"{name} shape {a.data.shape} (one column more)"
        call.name = ""  # the error may name either side of the mismatch
    elif kind == "values":
        if role in ("probs", "models"):
            v = data.draw(st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 7.0]), label="v")
            a.data = a.data.copy()
            a.data.flat[data.draw(st.integers(0, a.data.size - 1))] = v
            call.must_raise = v != v and name in call.refuses_nan
            call.what = f"{name} holds {v}"
        elif role == "labels":
            a.data = a.data.astype(np.int32)
            a.data.flat[0] = data.draw(st.sampled_from([-1, C, 255, 1 << 20]), label="label")
            call.what = f"{name} holds label {a.data.flat[0]}"
        else:
            a.data = a.data.astype(np.float32)
            a.data.flat[0] = data.draw(st.sampled_from([np.nan, -1e30, 1e30]), label="pixel")
            call.what = f"{name} pixel {a.data.flat[0]}"
    elif kind == "empty":
        axis = data.draw(st.integers(-2, -1), label="axis")
        for t in targets:
            t.data = np.take(t.data, [], axis=axis)
        call.what = f"{name} empty along axis {axis}"
        call.name = ""  # (its shape no longer matches the others': either may be named)
    elif kind == "huge":
        # every array argument huge alike (a consistent call): refused before allocating
        for other in names:
            for t in _arrays_of(call, other):
                t.layout, t.dtype = "huge", str(t.data.dtype)
                t.shape = t.data.shape[:-2] + (HUGE_SIDE, HUGE_SIDE)
        call.must_raise, call.name, call.what = True, "", "huge shapes"
    elif kind == "type":
        value = data.draw(st.sampled_from([None, "labels.png", 3, {"a": 1}]), label="obj")
        if role == "models":
            call.set(name, [value] * 2 if data.draw(st.booleans()) else value)
        else:
            call.set(name, value)
        call.must_raise, call.what = True, f"{name}={value!r}"
    return call


def spoil_scalar_instead(call, data):
    name = data.draw(st.sampled_from(OP_SCALARS[call.op]), label="scalar")
    value = data.draw(st.sampled_from(BAD_SCALARS[name]), label="value")
    call.set(name, value)
    call.must_raise, call.name, call.what = True, name, f"{name}={value!r}"
    return call


def names_argument(message: str, name: str, call: Call) -> bool:
    if not name:  # huge, mismatch, empty: any of the array arguments
        return any(re.search(rf"\b{re.escape(n)}\b", message) for n in call.arrays)
    return re.search(rf"\b{re.escape(name)}\b", message) is not None


#: ops whose backends are fewer than all (vote_confusion: numpy and numba)
OP_BACKENDS = _backend.OP_BACKENDS  # the one table of which op has which backend


@pytest.mark.parametrize("op, backend", [(op, b) for op in OPS for b in BACKENDS
                                         if b in OP_BACKENDS.get(op, BACKENDS)])
@PROFILE
@given(data=st.data())
def test_op_refuses_bad_input(worker, op, backend, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    n = data.draw(st.integers(0, 2), label="n")
    h, w = data.draw(st.integers(1, 7), label="h"), data.draw(st.integers(1, 7), label="w")
    call = spoil(base_call(op, rng, n, h, w, backend), data)
    reply = worker.call("op", op, call.args, call.kwargs, call.compare)
    where = f"segkit.{op}(backend={backend!r}) with {call.what}"
    if reply[0] == "ok":
        assert not call.must_raise, f"{where}: accepted (expected an error naming {call.name})"
        if call.compare:
            assert reply[1], f"{where}: the result differs from the plain call's"
        return
    _, type_name, expected_type, message, tb = reply
    assert expected_type, f"{where}: raised {type_name}, not ValueError/TypeError:\n{tb}"
    assert names_argument(message, call.name, call), \
        f"{where}: the message does not name {call.name or 'the arrays'}: {message!r}\n{tb}"


# ---- commands: bad options, missing paths, corrupt files ---------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small valid dataset (COCO file, images, masks, a store per model) and corrupt copies."""
    from segkit.io.masks import write_mask
    from segkit.io.store import ConfidenceStore
    from segkit.synthetic import make_coco_dataset

    root = tmp_path_factory.mktemp("bad_cli")
    ds = make_coco_dataset(root / "coco", 4, (32, 40), seed=1)
    masks = root / "masks"
    masks.mkdir()
    rng = np.random.default_rng(0)
    stems = [str(Path(f).with_suffix("")).replace("/", "+") for f in ds.images]
    classes = list(ds.classes)
    c = len(classes)
    for stem in stems:
        write_mask(masks / f"{stem}.png", rng.integers(0, c, (32, 40)).astype(np.uint8))
    stores = []
    for m in range(2):
        store = ConfidenceStore.create(root / f"store{m}", classes=classes, model=f"m{m}")
        for stem in stems:
            store.write(stem, _probs(rng, (c, 32, 40), 0))
        stores.append(root / f"store{m}")
    bad = root / "bad"
    bad.mkdir()
    png = (masks / f"{stems[0]}.png").read_bytes()
    (bad / "truncated.png").write_bytes(png[: len(png) // 2])
    (bad / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 10)
    (bad / "empty.json").write_text("")
    (bad / "truncated.json").write_text(ds.ann_file.read_text()[:200])
    (bad / "list.json").write_text("[1, 2, 3]")
    (bad / "no_images.json").write_text('{"annotations": [], "categories": []}')
    # tuned.json files that are binary or corrupt; train configs that are broken
    (bad / "tuned_binary.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff binary")
    (bad / "tuned_corrupt.json").write_text('{"weights": [1, 1], "classes": ')
    (bad / "syntax_config.py").write_text("model = dict(type='EncoderDecoder'\n")
    (bad / "nomodel_config.py").write_text("train_cfg = dict(max_iters=1)\n")
    (bad / "binary_config.py").write_bytes(b"\xff\xfe\x00\x01")
    # a folder of masks with one corrupt PNG
    shutil.copytree(masks, bad / "masks_corrupt")
    (bad / "masks_corrupt" / f"{stems[1]}.png").write_bytes(png[:40])
    # stores with a truncated .npy, a corrupt meta.json, no meta.json
    for spoilt in ("npy", "meta", "nometa", "shape"):
        dst = bad / f"store_{spoilt}"
        shutil.copytree(stores[0], dst)
        npy = dst / f"{stems[1]}.npy"
        if spoilt == "npy":
            npy.write_bytes(npy.read_bytes()[:100])
        elif spoilt == "meta":
            (dst / "meta.json").write_text("{not json")
        elif spoilt == "nometa":
            (dst / "meta.json").unlink()
        else:
            np.save(npy, np.zeros((c + 1, 5, 5), np.float16))
    return dict(root=root, ann=ds.ann_file, images=ds.ann_file.parent, masks=masks,
                stores=stores, bad=bad, stems=stems)


def cli_cases(d):
    """(argv, names): a bad command line and the words its error message may name."""
    b, s0, s1 = d["bad"], str(d["stores"][0]), str(d["stores"][1])
    missing = str(d["root"] / "does_not_exist")
    corrupt_json = [str(b / f) for f in ("empty.json", "truncated.json", "list.json",
                                         "no_images.json")]
    corrupt_stores = [str(b / f"store_{k}") for k in ("npy", "meta", "nometa", "shape")]
    cases = []
    for j in corrupt_json + [missing]:
        cases += [(["masks", j, "{out}"], [j, Path(j).name]),
                  (["kfold", j, "--out", "{out}"], [j, Path(j).name]),
                  (["resample", j, "{out}"], [j, Path(j).name])]
    cases += [
        (["resample", str(b / "masks_corrupt"), "{out}", "--workers", "1", "--no-progress"],
         [d["stems"][1], "masks_corrupt"]),
        (["resample", str(d["masks"]), "{out}", "--size", "4"], ["--size", "size"]),
        (["resample", str(d["masks"]), "{out}", "--size", "-1"], ["--size", "size"]),
        (["resample", str(d["masks"]), "{out}", "--ignore-index", "x"], ["--ignore-index"]),
        (["kfold", str(d["ann"]), "--k", "0", "--out", "{out}"], ["--k", "k"]),
        (["kfold", str(d["ann"]), "--k", "100", "--out", "{out}"], ["--k", "k", "fold"]),
        (["eval", str(d["masks"]), str(d["masks"]), "--num-classes", "0", "--out", "{out}"],
         ["--num-classes", "num_classes"]),
        (["eval", missing, str(d["masks"]), "--num-classes", "5"], [missing, "PRED"]),
        (["eval", str(b / "masks_corrupt"), str(d["masks"]), "--num-classes", "11",
          "--out", "{out}", "--workers", "1"], [d["stems"][1], "masks_corrupt"]),
        (["ensemble", s0, s1, "--weights", "1", "--out", "{out}"], ["--weights", "weights"]),
        (["ensemble", s0, s1, "--weights", "1,nan", "--out", "{out}"], ["--weights",
                                                                        "weights"]),
        (["ensemble", s0, missing, "--out", "{out}"], [missing, "does_not_exist"]),
        (["ensemble", s0, "--crf", "nosuch", "--out", "{out}"], ["--crf", "crf", "nosuch"]),
        (["crf", s0, missing, "--out", "{out}"], [missing, "IMAGES"]),
        (["crf", s0, str(d["images"]), "--out", "{out}", "--filter-size", "2"],
         ["--filter-size", "filter_size"]),
        (["audit", s0, "--gt", missing, "--out", "{out}"], [missing, "--gt"]),
        (["audit", s0, "--gt", str(d["masks"]), "--out", "{out}", "--weights", "a"],
         ["--weights", "weights"]),
        (["tune", s0, s1, "--gt", str(d["masks"]), "--out", "{out}", "--search", "magic"],
         ["--search", "search", "magic"]),
        (["tune", s0, "--gt", missing, "--out", "{out}"], [missing, "--gt"]),
        (["infer", missing, missing, "--images", str(d["images"]), "--out", "{out}"],
         [missing, "CONFIG"]),
        (["train", missing], [missing, "CONFIG"]),
        *[(["train", str(b / name), "--work-dir", "{out}"], [name])
          for name in ("syntax_config.py", "nomodel_config.py", "binary_config.py")],
        (["train", str(CONFIGS / "upernet_swin-tiny_cpu.py"), "--work-dir", "{out}",
          "--cfg-options", "model.backbone.depths.7=1"], ["model.backbone.depths.7"]),
        *[(argv, [name]) for name in ("tuned_binary.json", "tuned_corrupt.json")
          for argv in (["ensemble", s0, s1, "--tuned", str(b / name), "--out", "{out}"],
                       ["crf", s0, str(d["images"]), "--tuned", str(b / name), "--out",
                        "{out}"])],
        (["tune", s0, s0, "--gt", str(d["masks"]), "--out", "{out}"], [s0]),
        (["nosuchcommand"], ["nosuchcommand"]),
    ]
    for store in corrupt_stores:
        name = Path(store).name
        cases += [
            (["ensemble", store, s1, "--out", "{out}", "--workers", "1"], [name, store]),
            (["audit", store, s1, "--gt", str(d["masks"]), "--out", "{out}", "--workers", "1"],
             [name, store]),
            (["tune", store, s1, "--gt", str(d["masks"]), "--out", "{out}", "--workers", "1",
              "--no-progress"], [name, store]),
            (["eval", store, str(d["masks"]), "--num-classes", "11", "--workers", "1"],
             [name, store]),
        ]
    return cases


def leftovers(folder: Path) -> list[str]:
    """Temporaries (``.<name>.tmp-...``) and empty or truncated files left under `folder`."""
    bad = []
    for p in folder.rglob("*") if folder.exists() else []:
        if p.is_file() and (".tmp-" in p.name or p.stat().st_size == 0):
            bad.append(str(p.relative_to(folder)))
    return bad


@settings(PROFILE, max_examples=400)  # the table is finite: Hypothesis stops once it has run all
@given(data=st.data())
def test_command_refuses_bad_input(worker, dataset, tmp_path_factory, data):
    cases = cli_cases(dataset)
    argv, names = data.draw(st.sampled_from(cases), label="case")
    out = tmp_path_factory.mktemp("out")
    argv = [a.replace("{out}", str(out / "result")) for a in argv]
    _, code, stdout, stderr, uncaught = worker.call("cli", argv, str(out))
    where = f"segkit {' '.join(argv)}"
    assert uncaught is None, f"{where}: an uncaught exception (traceback):\n{uncaught}"
    assert code in (1, 2), f"{where}: exit status {code}\nstdout: {stdout}\nstderr: {stderr}"
    assert "Traceback" not in stderr + stdout, f"{where}: a traceback:\n{stderr}"
    assert any(n.lower() in stderr.lower() for n in names), \
        f"{where}: stderr names none of {names}: {stderr!r}"
    left = leftovers(out / "result")
    assert not left, f"{where}: left behind {left}"
