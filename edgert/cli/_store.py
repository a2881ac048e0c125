"""``edgert store install|activate|rollback|reseal|list``: versioned models on the robot.

``--root`` is the store directory (default ``$EDGERT_STORE_DIR`` or ``/var/lib/edgert/models``).
``activate`` runs the health gate; a refusal exits 2 and says why, leaving the active version
as it was. ``--hmac-key-file`` makes the store require and verify signatures.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from edgert._fake_runtime import fake_tensorrt_module
from edgert.cli._errors import EXIT_ERROR as _EXIT_ERROR
from edgert.cli._errors import FlagNames, print_error

__all__ = ["register"]

_EXIT_REFUSED = 2
_DEFAULT_ROOT = "/var/lib/edgert/models"
_HINT = "`edgert store ACTION --help` lists the options and the values each takes"
#: ModelStore's and HealthPolicy's parameter names as the flags that set them.
_FLAGS = FlagNames({"keep": "--keep", "samples": "--samples", "atol": "--atol", "rtol": "--rtol",
                    "p99_budget_ms": "--p99-budget-ms", "reference": "--reference",
                    "hmac_key": "--hmac-key-file", "cache_dir": "--cache-dir",
                    "profiles": "--shapes", "allow_host_code": "--allow-host-code"})


def register(sub: Any) -> None:
    """Add the ``store`` subcommand and its actions."""
    p = sub.add_parser("store", help="install, activate (health-gated), roll back and list "
                                     "model versions",
                       description="Versioned models with health-gated activation.")
    p.add_argument("--root", type=Path,
                   default=Path(os.environ.get("EDGERT_STORE_DIR", _DEFAULT_ROOT)),
                   help="the store directory (default $EDGERT_STORE_DIR or "
                        f"{_DEFAULT_ROOT})")
    p.add_argument("--hmac-key-file", type=Path, metavar="PATH",
                   help="require models signed with the key in this file")
    p.add_argument("--keep", type=int, default=5, help="versions to keep")
    p.add_argument("--cache-dir", type=Path,
                   help="build ONNX versions into TensorRT plans through this engine cache")
    p.add_argument("--shapes", action="append", default=[], metavar="NAME:MIN,OPT,MAX",
                   help="profiles for those builds")
    p.add_argument("--fp16", action="store_true", help="build with FP16 (TensorRT <= 10)")
    p.add_argument("--runtime", choices=("auto", "fake"), default="auto",
                   help="TensorRT to use (fake: edgert.testing.fake_tensorrt)")
    p.add_argument("--allow-host-code", action="store_true",
                   help="let verified version-compatible plans run their embedded runtime")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    inst = actions.add_parser("install", help="verify a model and add it as a version")
    inst.add_argument("model", help="a .onnx or .plan file (signature in MODEL.sig)")
    inst.add_argument("--version", required=True, help="the version label")
    inst.add_argument("--notes", default="", help="free text for the manifest")
    inst.add_argument("--min-tensorrt", metavar="VERSION", help="oldest TensorRT that may run it")
    inst.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of the model")
    inst.add_argument("--signature", metavar="HEX", help="HMAC-SHA256 tag (default MODEL.sig)")
    inst.add_argument("--reference-onnx", metavar="PATH", help="for a plan: its ONNX model")
    act = actions.add_parser("activate", help="make a version active if it passes the gate")
    act.add_argument("version")
    act.add_argument("--atol", type=float, default=1e-3, help="absolute tolerance")
    act.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance")
    act.add_argument("--p99-budget-ms", type=float, help="largest acceptable p99 latency")
    act.add_argument("--samples", type=int, default=8, help="random sample inputs")
    act.add_argument("--inputs", action="append", default=[], metavar="FILE.npz",
                     help="a sample input the robot sees, as a .npz of one array per input "
                          "name (np.savez); repeat for more samples (replaces --samples)")
    act.add_argument("--reference", choices=("auto", "onnx", "current", "none"),
                     default="auto", help="what outputs are compared with")
    rb = actions.add_parser("rollback", help="return to the previously active version")
    rb.add_argument("--check", action="store_true",
                    help="run the health gate (default tolerances) on the target first")
    actions.add_parser("reseal", help="seal the manifests of a keyed store made by an edgert "
                                      "before sealed manifests (needs --hmac-key-file)")
    ls = actions.add_parser("list", help="versions, the active one, and the history")
    ls.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_run)


def _store(args: argparse.Namespace) -> Any:
    from edgert.store import BuildOptions, ModelStore

    key = None
    if args.hmac_key_file is not None:
        try:
            key = args.hmac_key_file.read_bytes().strip()
        except OSError as err:
            raise _Usage(f"--hmac-key-file: cannot read {args.hmac_key_file}: "
                         f"{err.strerror or err}\nHint: give the file that holds the fleet's "
                         "signing key (readable by this user)") from None
    if args.root.exists() and not args.root.is_dir():
        raise _Usage(f"--root {args.root} is a file, not a store directory\nHint: give the "
                     "store's directory (it is created on the first install)")
    trt: ModuleType | None = None
    if args.runtime == "fake":
        trt = fake_tensorrt_module()
    build = BuildOptions(fp16=args.fp16, profiles=[";".join(args.shapes)] if args.shapes else ())
    return ModelStore(args.root, hmac_key=key, keep=args.keep, trt_module=trt,
                      cache_dir=args.cache_dir, build=build,
                      allow_host_code=args.allow_host_code)


class _Usage(Exception):
    """A flag's value that the store cannot use, said before the store is touched."""


def _list(store: Any, as_json: bool) -> None:
    from edgert.store._store import describe

    info = describe(store)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    print(f"store {info['root']}: active {info['active'] or '(none)'}")
    for m in info["versions"]:
        mark = "*" if m["version"] == info["active"] else " "
        print(f" {mark} {m['version']:<16} {m['format']:<14} sha256 {m['sha256'][:16]}  "
              f"{'signed' if m['signature'] else 'unsigned'}  {m['notes']}")
    for e in info["history"][-10:]:
        prev = f" (was {e['previous']})" if e["previous"] else ""
        print(f"   {e['event']:<8} {e['version']}{prev} {e['detail']}")


def _samples(paths: list[str]) -> list[dict[str, Any]]:
    """The sample inputs of ``--inputs``: one ``.npz`` (name -> array) per sample.

    Raises:
        _Usage: A file cannot be read as such.
    """
    import numpy as np

    samples = []
    for path in paths:
        try:
            loaded = np.load(path, allow_pickle=False)
        except Exception as err:  # OSError, ValueError, zipfile.BadZipFile, EOFError, ...
            raise _Usage(f"--inputs {path}: cannot read it as a .npz of arrays "
                         f"({type(err).__name__}: {err})") from err
        if not hasattr(loaded, "files"):  # a .npy: one array without a name
            raise _Usage(f"--inputs {path} holds one unnamed array: save one array per input "
                         "name with np.savez(PATH, name=array, ...)")
        try:
            with loaded as npz:
                sample = {name: npz[name] for name in npz.files}
        except Exception as err:  # a damaged member
            raise _Usage(f"--inputs {path}: cannot read its arrays "
                         f"({type(err).__name__}: {err})") from err
        if not sample:
            raise _Usage(f"--inputs {path} holds no arrays")
        samples.append(sample)
    return samples


def _run(args: argparse.Namespace) -> int:
    from edgert.errors import EdgeRTError
    from edgert.store import HealthCheckError, HealthPolicy

    try:
        store = _store(args)
        if args.action == "install":
            m = store.install(args.model, args.version, notes=args.notes,
                              min_tensorrt=args.min_tensorrt, sha256=args.sha256,
                              signature=args.signature, reference_onnx=args.reference_onnx)
            print(f"installed {m.version} ({m.format}, sha256 {m.sha256})")
        elif args.action == "activate":
            policy = HealthPolicy(atol=args.atol, rtol=args.rtol, samples=args.samples,
                                  p99_budget_ms=args.p99_budget_ms, reference=args.reference,
                                  inputs=_samples(args.inputs) or None)
            report = store.activate(args.version, policy=policy)
            print(f"activated {args.version}: {report.summary()}")
        elif args.action == "rollback":
            target = store.rollback(policy=HealthPolicy() if args.check else None)
            print(f"rolled back to {target.version}")
        elif args.action == "reseal":
            sealed = store.reseal()
            print(f"sealed {', '.join(sealed)}" if sealed else "every manifest was sealed")
        else:
            _list(store, args.json)
    except HealthCheckError as err:
        print_error("edgert store", err.message,
                    hint="the active version did not change; if the model is right, state what "
                         "it must meet: --atol, --rtol, --p99-budget-ms, or sample inputs the "
                         "robot sees with --inputs FILE.npz", flags=_FLAGS)
        return _EXIT_REFUSED
    except BrokenPipeError:
        raise  # the reader went away (`| head`): not an error of the store
    except (EdgeRTError, OSError, _Usage) as err:
        print_error("edgert store", err, hint=_HINT, flags=_FLAGS)
        return _EXIT_ERROR
    return 0
