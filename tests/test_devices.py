"""One device check for every command and the transform (`lwst.devices`)."""

import pytest
import torch

from lwst.devices import DeviceError, device_problem, resolve_device


@pytest.mark.parametrize(("name", "problem"), [
    ("gpu", "not a device name (cpu, cuda or cuda:N)"),
    ("cuda:x", "not a device name (cpu, cuda or cuda:N)"),
    ("mps", "lwst computes on cpu or cuda, not mps"),
    ("meta", "lwst computes on cpu or cuda, not meta"),
])
def test_names_lwst_cannot_compute_on_are_refused_with_the_reason(name, problem):
    assert device_problem(name) == problem
    with pytest.raises(DeviceError, match=f"^--device {name}: "):
        resolve_device(name, label=f"--device {name}")


def test_the_cpu_and_auto_resolve_without_touching_cuda():
    assert device_problem("cpu") is None
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_refused_before_cuda_is_initialised(name):
    assert device_problem(name) == "torch sees no CUDA device on this machine"
    with pytest.raises(DeviceError, match=f"^device '{name}': torch sees no CUDA device"):
        resolve_device(name)
    assert not torch.cuda.is_initialized()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_index_beyond_the_machine_names_how_many_there_are():
    count = torch.cuda.device_count()
    assert device_problem(f"cuda:{count}") == f"torch sees {count} CUDA device(s) on this machine"
