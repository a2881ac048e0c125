"""The Engine: load a TensorRT plan or an ONNX model, verify it, describe it, make executables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from typing_extensions import Unpack

from edgert._executable import Executable, Placement, ProfileShape, TensorSpec
from edgert._options import check_or_create_options
from edgert._owner import Owner
from edgert.engine._integrity import IntegrityStatus, check_integrity
from edgert.engine._load_options import LoadOptions, LoadOverrides
from edgert.engine._onnx import OnnxLoaded, OnnxRuntimeOptions, load_onnx
from edgert.engine._onnx_executable import OnnxExecutable
from edgert.engine._source import (
    EngineFormat,
    ModelHeader,
    ModelSource,
    Source,
    read_source,
    sniff,
)
from edgert.engine._tensorrt import (
    TrtLoaded,
    check_temp_dir,
    describe_tensors,
    deserialize_plan,
    device_memory_bytes,
)
from edgert.engine._trt_executable import TensorRTExecutable
from edgert.engine._trt_module import (
    EngineFlavour,
    requires_cuda,
    resolve_trt_module,
)
from edgert.errors import EngineLoadError, InvalidArgumentError

__all__ = ["Engine"]


def _release(backend: TrtLoaded | OnnxLoaded) -> None:
    if isinstance(backend, TrtLoaded):
        backend.release()
    else:
        backend.session = None


class Engine(Owner):
    """A loaded model: a TensorRT engine, or an ONNX model on ONNX Runtime.

    Create one with :meth:`load`. It describes its tensors and makes executables
    (:meth:`create_context`) that sessions drive. Each executable keeps its engine alive, so
    closing the engine while executables exist only drops the engine's own reference.
    """

    def __init__(self, *, backend: TrtLoaded | OnnxLoaded, tensors: tuple[TensorSpec, ...],
                 header: ModelHeader, path: Path | None, flavour: EngineFlavour,
                 runtime_module: str, runtime_version: str, integrity: IntegrityStatus) -> None:
        """Use :meth:`Engine.load`; this constructor is internal."""
        self._backend = backend
        self._tensors = tensors
        self._header = header
        self._path = path
        self._flavour = flavour
        self._runtime_module = runtime_module
        self._runtime_version = runtime_version
        self._integrity = integrity
        self._own(lambda: _release(backend), "Engine")

    @classmethod
    def load(
        cls,
        source: Source,
        options: LoadOptions | None = None,
        **overrides: Unpack[LoadOverrides],
    ) -> Engine:
        """Load a model from a path or from bytes.

        The file is read once, without blocking, and must be a regular file of at most
        ``max_bytes``; the same bytes are verified, recognised from their first bytes, then
        deserialized.

        Args:
            source: Path to a ``.plan``/``.engine`` or ``.onnx`` file, or the model's bytes.
            options: A :class:`LoadOptions`; the keywords below override its fields (unknown
                keywords raise :class:`~edgert.InvalidArgumentError`).
            runtime: ``auto`` (TensorRT full, lean, dispatch: the first that imports; ONNX
                models always use ONNX Runtime), ``full``, ``lean``, ``dispatch`` or
                ``onnxruntime``.
            device: CUDA device ordinal for TensorRT.
            sha256: Expected SHA-256 of the bytes (64 hex characters or 32 raw bytes).
            hmac_key: Key for an HMAC-SHA256 check: ``bytes``/``str``, or a
                :class:`~pathlib.Path` to a key file (surrounding whitespace stripped). The tag
                comes from ``signature`` or from the sidecar file ``<path>.sig`` (64 hex
                characters).
            signature: The expected HMAC-SHA256 tag, for bytes or to override the sidecar.
            allow_host_code: Let TensorRT run host code embedded in a version-compatible plan.
                That is code execution: use it only with a verified ``sha256``/``hmac_key``.
            plugins: Plugin shared libraries TensorRT should load before deserializing.
            temp_dir: Writable directory where TensorRT may unpack an embedded lean runtime
                (robots often have read-only root filesystems).
            trt_module: A TensorRT module to use instead of importing one (e.g.
                :mod:`edgert.testing.fake_tensorrt`).
            onnx_options: How ONNX Runtime runs ONNX models (default: one thread, CPU).
            max_bytes: Refuse a model file larger than this (default 4 GiB).

        Raises:
            InvalidArgumentError: An argument is malformed (unknown runtime, bad digest, a key
                that is not bytes/str/key file, a path with a NUL byte, ...).
            EngineLoadError: The file is missing, a directory, not a regular file (a FIFO, a
                device), larger than ``max_bytes``, changing while read, or unreadable, or the
                runtime refused the model; ``log_lines`` holds the runtime's own messages.
            PermissionDeniedError: The file may not be read; ``path`` names it.
            OutOfMemoryError: No memory for the model's bytes.
            ModelFormatError: Empty, truncated, or not a TensorRT plan or ONNX model.
            VersionMismatchError: Built by a TensorRT (or ONNX) version this runtime cannot read.
            IntegrityError: Digest or HMAC mismatch; nothing was deserialized.
            NotSupportedError: The runtime is not installed, or a plan needs a CUDA device and
                there is none.
        """
        o = check_or_create_options(LoadOptions, options, overrides, what="Engine.load")
        temp_path = check_temp_dir(o.temp_dir)
        src = read_source(source, max_bytes=o.max_bytes)
        integrity = check_integrity(src.data, path=src.path, sha256=o.sha256,
                                    hmac_key=o.hmac_key, signature=o.signature)
        return cls._from_checked(src, o, integrity, temp_path)

    @classmethod
    def _load_verified(cls, src: ModelSource, integrity: IntegrityStatus,
                       **overrides: Unpack[LoadOverrides]) -> Engine:
        """Load bytes whose integrity the caller proved already (the engine cache's memo of
        an HMAC check made earlier this boot: :mod:`edgert.store._verified`)."""
        o = check_or_create_options(LoadOptions, None, overrides, what="Engine.load")
        return cls._from_checked(src, o, integrity, check_temp_dir(o.temp_dir))

    @classmethod
    def _from_checked(cls, src: ModelSource, o: LoadOptions, integrity: IntegrityStatus,
                      temp_path: Path | None) -> Engine:
        """The engine of ``src``, read and checked (``integrity`` says how) by the caller."""
        runtime, trt_module, plugins = o.runtime, o.trt_module, o.plugins
        header = sniff(src.data, src.label)
        if header.format is EngineFormat.ONNX:
            if runtime not in ("auto", "onnxruntime") or trt_module is not None:
                raise InvalidArgumentError(
                    f"{src.label} is an ONNX model, which runs on ONNX Runtime, not TensorRT",
                    hint="use runtime='auto', or build a TensorRT plan from it first "
                         "(edgert build model.onnx -o model.plan, or Engine.from_onnx)")
            if plugins:
                raise InvalidArgumentError("plugins= applies to TensorRT plans only")
            onnx = load_onnx(src, header, o.onnx_options or OnnxRuntimeOptions())
            return cls(backend=onnx, tensors=onnx.tensors, header=header, path=src.path,
                       flavour=EngineFlavour.ONNXRUNTIME, runtime_module=onnx.ort.__name__,
                       runtime_version=str(onnx.ort.__version__), integrity=integrity)
        trt, flavour = resolve_trt_module(runtime, trt_module)
        loaded = deserialize_plan(src, header, trt=trt, flavour=flavour, device=o.device,
                                  allow_host_code=o.allow_host_code, plugins=tuple(plugins),
                                  temp_dir=temp_path)
        try:
            tensors = describe_tensors(loaded.engine)
        except BaseException:
            loaded.release()
            raise
        return cls(backend=loaded, tensors=tensors, header=header, path=src.path,
                   flavour=flavour, runtime_module=str(getattr(trt, "__name__", "tensorrt")),
                   runtime_version=str(getattr(trt, "__version__", "unknown")),
                   integrity=integrity)

    @classmethod
    def from_onnx(cls, path: Source, *, cache_dir: str | os.PathLike[str] | None = None,
                  build: Any = None, **options: Any) -> Engine:
        """Load the TensorRT plan built from an ONNX model, building it once per key.

        The work is done by :class:`edgert.store.EngineCache` (see it and docs/lifecycle.md):
        the plan is cached under a key of the model's SHA-256, ``build``, the TensorRT version
        and flavour, and the GPU's name and compute capability, with atomic writes, an HMAC
        sidecar and a lock so that processes starting together build once. Where nothing can
        build (lean/dispatch runtimes only, no TensorRT, no GPU) the ONNX model runs on ONNX
        Runtime instead: the engine's ``flavour`` is then ``onnxruntime``.

        Args:
            path: The ONNX model (path or bytes).
            cache_dir: The cache directory (default ``$EDGERT_CACHE_DIR`` or
                ``~/.cache/edgert/engines``).
            build: An :class:`edgert.store.BuildOptions`.
            **options: ``trt_module``, ``device``, ``hmac_key``, ``fallback``,
                ``lock_timeout_s`` (of the cache) and ``allow_host_code``, ``progress``,
                ``onnx_options``, ``temp_dir`` (of :meth:`edgert.store.EngineCache.load`).

        Raises:
            InvalidArgumentError: Not an ONNX model, or bad options.
            NotSupportedError: Nothing can build and ``fallback=False``.
            PermissionDeniedError: A plan must be built and ``cache_dir`` is not writable.
            BuildError: TensorRT could not build the model.
        """
        from edgert.store._cache import from_onnx  # the store layer sits above this one

        return from_onnx(path, cache_dir=cache_dir, build=build, **options)

    @property
    def format(self) -> EngineFormat:
        """TensorRT plan or ONNX model."""
        return self._header.format

    @property
    def header(self) -> ModelHeader:
        """What the model's first bytes said (versions, opsets, size)."""
        return self._header

    @property
    def path(self) -> Path | None:
        """The file it was loaded from, or None for bytes."""
        return self._path

    @property
    def size_bytes(self) -> int:
        """Size of the serialized model."""
        return self._header.size_bytes

    @property
    def flavour(self) -> EngineFlavour:
        """The runtime flavour that loaded it (full, lean, dispatch or onnxruntime)."""
        return self._flavour

    @property
    def runtime_module(self) -> str:
        """The Python module that loaded it, e.g. ``tensorrt_lean`` or ``onnxruntime``."""
        return self._runtime_module

    @property
    def runtime_version(self) -> str:
        """That module's version, e.g. ``11.4.0.106``."""
        return self._runtime_version

    @property
    def integrity(self) -> IntegrityStatus:
        """What was verified before loading."""
        return self._integrity

    @property
    def placement(self) -> Placement:
        """Where executables of this engine want tensor memory.

        ``host`` for ONNX models and for TensorRT modules that declare they need no GPU (the
        fake TensorRT computes on host memory); ``device`` for real TensorRT.
        """
        if isinstance(self._backend, OnnxLoaded) or not requires_cuda(self._backend.trt):
            return Placement.HOST
        return Placement.DEVICE

    @property
    def tensors(self) -> tuple[TensorSpec, ...]:
        """Every I/O tensor, inputs first."""
        return self._tensors

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The input tensors."""
        return tuple(t for t in self._tensors if t.is_input)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The output tensors."""
        return tuple(t for t in self._tensors if not t.is_input)

    def tensor(self, name: str) -> TensorSpec:
        """The tensor called ``name``.

        Raises:
            InvalidArgumentError: No such tensor.
        """
        for t in self._tensors:
            if t.name == name:
                return t
        raise InvalidArgumentError(
            f"no tensor named {name!r}",
            hint=f"tensors: {', '.join(t.name for t in self._tensors)}")

    @property
    def num_profiles(self) -> int:
        """Number of optimization profiles; for ONNX, 1 if the model declares one, else 0."""
        if isinstance(self._backend, TrtLoaded):
            self._check_open()
            return int(self._backend.engine.num_optimization_profiles)
        return 1 if any(t.profiles for t in self.inputs) else 0

    @property
    def profiles(self) -> tuple[dict[str, ProfileShape], ...]:
        """Per profile, ``{input name: (min, opt, max)}`` for the inputs that have one."""
        count = max((len(t.profiles) for t in self.inputs), default=0)
        return tuple({t.name: t.profiles[i] for t in self.inputs if i < len(t.profiles)}
                     for i in range(count))

    @property
    def device_memory_bytes(self) -> int | None:
        """Scratch device memory one context needs (None for ONNX models)."""
        if isinstance(self._backend, TrtLoaded):
            self._check_open()
            return device_memory_bytes(self._backend.engine)
        return None

    def create_context(self, *, profile: int = 0, stream_handle: int = 0) -> Executable:
        """Make an executable for a session to drive.

        Dynamic inputs start at their profile's opt shape.

        Args:
            profile: The optimization profile the context uses.
            stream_handle: The stream on which to switch to ``profile`` (TensorRT, profile > 0).

        Raises:
            ResourceClosedError: The engine is closed.
            InvalidArgumentError: No such profile.
            EngineLoadError: TensorRT could not create the context (usually out of device
                memory) or switch its profile; ``log_lines`` says why.
        """
        self._check_open()
        backend = self._backend
        if isinstance(backend, OnnxLoaded):
            if profile != 0:
                raise InvalidArgumentError(f"ONNX models have one profile; got profile={profile}")
            return OnnxExecutable(engine=self, loaded=backend)
        count = self.num_profiles
        if isinstance(profile, bool) or not 0 <= profile < count:
            raise InvalidArgumentError(f"profile {profile!r} does not exist ({count} profiles)",
                                       hint=f"use 0..{count - 1}")
        label = str(self._path) if self._path else "<bytes>"
        backend.bridge.drain()
        context = backend.engine.create_execution_context()
        if context is None:
            raise EngineLoadError(
                f"TensorRT could not create an execution context for {label}",
                path=str(self._path) if self._path else None, log_lines=backend.bridge.drain(),
                hint=f"each context needs {self.device_memory_bytes or 0:,} bytes of device "
                     "memory: close unused contexts, engines or other GPU users")
        if profile and not context.set_optimization_profile_async(profile, stream_handle):
            raise EngineLoadError(
                f"TensorRT could not switch a context of {label} to profile {profile}",
                log_lines=backend.bridge.drain(), hint="use one context per profile")
        return TensorRTExecutable(engine=self, loaded=backend, context=context,
                                  tensors=self._tensors, profile=profile,
                                  placement=self.placement)

    def __repr__(self) -> str:
        where = str(self._path) if self._path else "<bytes>"
        state = " closed" if self.closed else ""
        return (f"<Engine {where} {self.format.value} on {self._runtime_module} "
                f"{self._runtime_version}{state}>")
