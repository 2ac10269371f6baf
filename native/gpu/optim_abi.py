"""ctypes bindings of the parts of native/include/optim.h that the torch harness uses.

The one place Python declares the ABI's structs and calls its SGD and Adam steps (a change of
optim_sgd_step's or optim_adam_step's signature is one edit here). Tensors are passed by their data_ptr(), so the
same code drives the CPU path (CPU tensors) and the CUDA path (CUDA tensors).
"""

import ctypes
import os

ABI_VERSION = 9
DEVICE_CPU, DEVICE_CUDA = 0, 1
DTYPE_FLOAT32, DTYPE_FLOAT64 = 0, 1
STATUS_OK = 0

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_LIBRARY = os.path.join(_REPO, "artifacts", "native", "lib", "libOptim.Native.so")


class TensorList(ctypes.Structure):
    """optim_tensor_list"""

    _fields_ = [
        ("count", ctypes.c_int64),
        ("params", ctypes.POINTER(ctypes.c_void_p)),
        ("grads", ctypes.POINTER(ctypes.c_void_p)),
        ("momentum_buffers", ctypes.POINTER(ctypes.c_void_p)),
        ("numels", ctypes.POINTER(ctypes.c_int64)),
        ("buffer_fresh", ctypes.POINTER(ctypes.c_uint8)),
        ("group_index", ctypes.POINTER(ctypes.c_int32)),
    ]


class SgdParams(ctypes.Structure):
    """optim_sgd_params"""

    _fields_ = [
        ("lr", ctypes.c_double),
        ("momentum", ctypes.c_double),
        ("dampening", ctypes.c_double),
        ("weight_decay", ctypes.c_double),
        ("nesterov", ctypes.c_int32),
        ("maximize", ctypes.c_int32),
        ("lr_ptr", ctypes.c_void_p),
    ]


class AdamTensors(ctypes.Structure):
    """optim_adam_tensors"""

    _fields_ = [
        ("count", ctypes.c_int64),
        ("params", ctypes.POINTER(ctypes.c_void_p)),
        ("grads", ctypes.POINTER(ctypes.c_void_p)),
        ("exp_avgs", ctypes.POINTER(ctypes.c_void_p)),
        ("exp_avg_sqs", ctypes.POINTER(ctypes.c_void_p)),
        ("max_exp_avg_sqs", ctypes.POINTER(ctypes.c_void_p)),
        ("numels", ctypes.POINTER(ctypes.c_int64)),
        ("steps", ctypes.POINTER(ctypes.c_int64)),
        ("group_index", ctypes.POINTER(ctypes.c_int32)),
        ("step_counts", ctypes.POINTER(ctypes.c_void_p)),
    ]


class AdamParams(ctypes.Structure):
    """optim_adam_params"""

    _fields_ = [
        ("lr", ctypes.c_double),
        ("beta1", ctypes.c_double),
        ("beta2", ctypes.c_double),
        ("eps", ctypes.c_double),
        ("weight_decay", ctypes.c_double),
        ("amsgrad", ctypes.c_int32),
        ("maximize", ctypes.c_int32),
        ("decoupled", ctypes.c_int32),
    ]


class OptimError(RuntimeError):
    pass


def _pointers(tensors):
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])


def tensor_list(params, grads, buffers=None, fresh=None):
    """An optim_tensor_list over torch tensors (dense, contiguous, one dtype and device).

    buffers: momentum buffers or None; fresh: one bool per tensor or None. The arrays the struct
    points to, and the tensors, are kept alive as attributes of the returned object.
    """
    for t in list(params) + list(grads) + list(buffers or []):
        if not t.is_contiguous():
            raise ValueError("tensors passed to the C ABI must be contiguous")
    tl = TensorList()
    # The memory the pointers point to stays alive too (copies: the caller may change its lists).
    tl._tensors = tuple(tuple(x) for x in (params, grads, buffers or []))
    flags = None
    if fresh is not None:
        flags = (ctypes.c_uint8 * len(params))(*[1 if f else 0 for f in fresh])
    tl._keep = [
        _pointers(params),
        _pointers(grads),
        _pointers(buffers) if buffers is not None else None,
        (ctypes.c_int64 * len(params))(*[t.numel() for t in params]),
        flags,
    ]
    tl.count = len(params)
    tl.params = ctypes.cast(tl._keep[0], ctypes.POINTER(ctypes.c_void_p))
    tl.grads = ctypes.cast(tl._keep[1], ctypes.POINTER(ctypes.c_void_p))
    if tl._keep[2] is not None:
        tl.momentum_buffers = ctypes.cast(tl._keep[2], ctypes.POINTER(ctypes.c_void_p))
    tl.numels = ctypes.cast(tl._keep[3], ctypes.POINTER(ctypes.c_int64))
    if tl._keep[4] is not None:
        tl.buffer_fresh = ctypes.cast(tl._keep[4], ctypes.POINTER(ctypes.c_uint8))
    return tl


def adam_tensors(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None):
    """An optim_adam_tensors over torch tensors (one group); set_step(t) before each step names
    every tensor's step number t (1 on the first). Keeps its arrays and the tensors alive as
    attributes."""
    for t in list(params) + list(grads) + list(exp_avgs) + list(exp_avg_sqs) + list(
            max_exp_avg_sqs or []):
        if not t.is_contiguous():
            raise ValueError("tensors passed to the C ABI must be contiguous")
    n = len(params)
    at = AdamTensors()
    at._steps = (ctypes.c_int64 * n)(*([1] * n))
    at._tensors = tuple(tuple(x) for x in (params, grads, exp_avgs, exp_avg_sqs,
                                            max_exp_avg_sqs or []))  # their memory too
    at._keep = [_pointers(params), _pointers(grads), _pointers(exp_avgs), _pointers(exp_avg_sqs),
                _pointers(max_exp_avg_sqs) if max_exp_avg_sqs is not None else None,
                (ctypes.c_int64 * n)(*[t.numel() for t in params])]
    at.count = n
    at.params, at.grads, at.exp_avgs, at.exp_avg_sqs = (
        ctypes.cast(a, ctypes.POINTER(ctypes.c_void_p)) for a in at._keep[:4])
    if at._keep[4] is not None:
        at.max_exp_avg_sqs = ctypes.cast(at._keep[4], ctypes.POINTER(ctypes.c_void_p))
    at.numels = ctypes.cast(at._keep[5], ctypes.POINTER(ctypes.c_int64))
    at.steps = ctypes.cast(at._steps, ctypes.POINTER(ctypes.c_int64))
    return at


def set_step(tensors, step):
    for k in range(tensors.count):
        tensors._steps[k] = step


def adam_params(lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False,
                maximize=False, decoupled=False):
    return AdamParams(lr, beta1, beta2, eps, weight_decay, int(amsgrad), int(maximize),
                      int(decoupled))


def sgd_params(lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False,
               lr_ptr=None):
    return SgdParams(lr, momentum, dampening, weight_decay, int(nesterov), int(maximize), lr_ptr)


class Library:
    """libOptim.Native loaded with ctypes; fails loudly on a missing file or another ABI version."""

    def __init__(self, path=None):
        path = path or os.environ.get("OPTIM_NATIVE_LIBRARY") or DEFAULT_LIBRARY
        if not os.path.exists(path):
            raise OptimError(f"native library not found: {path} (build it, or pass --lib)")
        self.path = path
        lib = ctypes.CDLL(path)
        lib.optim_abi_version.restype = ctypes.c_int32
        lib.optim_build_info.restype = ctypes.c_char_p
        lib.optim_last_error.restype = ctypes.c_char_p
        lib.optim_status_name.restype = ctypes.c_char_p
        lib.optim_status_name.argtypes = [ctypes.c_int32]
        lib.optim_cuda_device_count.restype = ctypes.c_int32
        lib.optim_cuda_device_count.argtypes = [ctypes.POINTER(ctypes.c_int32)]
        lib.optim_sgd_step.restype = ctypes.c_int32
        lib.optim_sgd_step.argtypes = [
            ctypes.c_int32,
            ctypes.c_int32,
            ctypes.c_int32,
            ctypes.POINTER(TensorList),
            ctypes.c_int32,
            ctypes.POINTER(SgdParams),
        ]
        lib.optim_adam_step.restype = ctypes.c_int32
        lib.optim_adam_step.argtypes = [
            ctypes.c_int32,
            ctypes.c_int32,
            ctypes.c_int32,
            ctypes.POINTER(AdamTensors),
            ctypes.c_int32,
            ctypes.POINTER(AdamParams),
        ]
        lib.optim_cuda_set_stream.restype = ctypes.c_int32
        lib.optim_cuda_set_stream.argtypes = [ctypes.c_int32, ctypes.c_void_p]
        lib.optim_torch_cuda_stream.restype = ctypes.c_int32
        lib.optim_torch_cuda_stream.argtypes = [ctypes.c_int32, ctypes.POINTER(ctypes.c_void_p)]
        self._lib = lib
        version = lib.optim_abi_version()
        if version != ABI_VERSION:
            raise OptimError(f"{path} has ABI version {version}; this harness speaks {ABI_VERSION}")

    def build_info(self):
        return self._lib.optim_build_info().decode()

    def cuda_device_count(self):
        n = ctypes.c_int32(-1)
        self._check(self._lib.optim_cuda_device_count(ctypes.byref(n)), "optim_cuda_device_count")
        return n.value

    def sgd_step(self, device, dtype, tensors, params):
        """The one call of optim_sgd_step (device index 0)."""
        status = self._lib.optim_sgd_step(device, 0, dtype, ctypes.byref(tensors), 1,
                                          ctypes.byref(params))
        self._check(status, "optim_sgd_step")

    def adam_step(self, device, dtype, tensors, params):
        """The one call of optim_adam_step (device index 0, one group)."""
        status = self._lib.optim_adam_step(device, 0, dtype, ctypes.byref(tensors), 1,
                                           ctypes.byref(params))
        self._check(status, "optim_adam_step")

    def cuda_set_stream(self, stream):
        """The calling thread's stream for device 0 (a cudaStream_t as an int; 0: the default)."""
        self._check(self._lib.optim_cuda_set_stream(0, stream or None), "optim_cuda_set_stream")

    def torch_cuda_stream(self):
        """LibTorch's current stream for device 0 as the library finds it (an int; 0: default)."""
        out = ctypes.c_void_p()
        self._check(self._lib.optim_torch_cuda_stream(0, ctypes.byref(out)),
                    "optim_torch_cuda_stream")
        return out.value or 0

    def _check(self, status, what):
        if status != STATUS_OK:
            name = self._lib.optim_status_name(status).decode()
            raise OptimError(f"{what}: {name}: {self._lib.optim_last_error().decode()}")
