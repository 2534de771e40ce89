"""Reading nvidia-smi's answers and judging which GPUs others use (pegasus.gpuprobe), as tables."""
import pytest

from pegasus.gpuprobe import App, Gpu, Reading, busy, describe, parse, parse_apps, parse_gpus

A, B = "GPU-5f0c2a1e-0000", "GPU-9b7d44c0-1111"
SPEC_GPUS = f"0, {A}, 3, 81559\n1, {B}, 40211, 81559\n"  # as in spec/slots.md
SPEC_APPS = f"{B}, 4242, 40200\n"


@pytest.mark.parametrize("text, gpus", [
    (SPEC_GPUS, (Gpu(0, A, 3, 81559), Gpu(1, B, 40211, 81559))),
    (f"0,{A},3,81559", (Gpu(0, A, 3, 81559),)),  # no spaces, no final newline
    (f"\n 0 , {A} , 3 , 81559 \r\n\n", (Gpu(0, A, 3, 81559),)),  # blank lines, CRLF
    (f"0, {A}, [N/A], [N/A]\n", (Gpu(0, A, None, None),)),  # not reported
    (f"1, {B}, 0, 16384\n0, {A}, 5, 16384\n", (Gpu(1, B, 0, 16384), Gpu(0, A, 5, 16384))),
])
def test_gpu_lines_read_as_typed(text, gpus):
    assert parse_gpus(text) == gpus


@pytest.mark.parametrize("text, says", [
    ("", "it lists no GPU"),
    ("\n\n", "it lists no GPU"),
    ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver",
     "line 1 ('NVIDIA-SMI has failed"),
    (f"0, {A}, 3", "line 1 ('0, GPU-5f0c2a1e-0000, 3') is not 'index, uuid, memory.used, "
                   "memory.total'"),
    (f"0, {A}, 3, 81559, 7", "is not 'index, uuid"),
    (f"0, {A}, 3 MiB, 81559", "line 1: memory.used '3 MiB' is not a whole number"),
    (f"0, {A}, -3, 81559", "memory.used '-3' is not a whole number"),
    (f"x, {A}, 3, 81559", "line 1: GPU index 'x' is not a whole number"),
    (f"[N/A], {A}, 3, 81559", "line 1: the GPU index is not reported"),
    (f"0, {A}, 3, 81559\n0, {B}, 3, 81559", "line 2: GPU 0 is listed twice"),
    (f"0, , 3, 81559", "is not 'index, uuid"),
    (f"0, {A}, ², 81559", "is not a whole number"),
])
def test_gpu_lines_that_do_not_read_are_errors(text, says):
    with pytest.raises(ValueError) as err:
        parse_gpus(text)
    assert says in str(err.value)


@pytest.mark.parametrize("text, apps", [
    ("", ()),
    (SPEC_APPS, (App(B, "4242", 40200),)),
    (f"{A}, 17, [N/A]\n{A}, 18, 5\n", (App(A, "17", None), App(A, "18", 5))),
])
def test_process_lines_read_as_typed(text, apps):
    assert parse_apps(text) == apps


@pytest.mark.parametrize("text, says", [
    ("No running processes found", "line 1 ('No running processes found') is not "
                                   "'gpu_uuid, pid, used_memory'"),
    (f"{A}, 17", "is not 'gpu_uuid, pid, used_memory'"),
    (f"{A}, 17, lots", "line 1: used_memory 'lots' is not a whole number"),
])
def test_process_lines_that_do_not_read_are_errors(text, says):
    with pytest.raises(ValueError) as err:
        parse_apps(text)
    assert says in str(err.value)


def gpus(*used):
    return tuple(Gpu(i, f"GPU-{i}", mib, 81559) for i, mib in enumerate(used))


@pytest.mark.parametrize("reading, slots, busy_mib, found", [
    (parse(SPEC_GPUS, SPEC_APPS), 2, 1024, {1: "1 compute process (pid 4242)"}),
    (parse(SPEC_GPUS, ""), 2, 1024, {1: "40211 MiB used, more than gpu_busy_mib 1024"}),
    (parse(SPEC_GPUS, ""), 2, 40211, {}),  # not more than the setting
    (parse(SPEC_GPUS, ""), 2, 40210, {1: "40211 MiB used, more than gpu_busy_mib 40210"}),
    (Reading(gpus(0, 0)), 2, 0, {}),
    (Reading(gpus(1, 0)), 2, 0, {0: "1 MiB used, more than gpu_busy_mib 0"}),
    # a process counts whatever memory it uses (a job that just started has none yet)
    (Reading(gpus(0, 0), (App("GPU-0", "7", 0),)), 2, 1024, {0: "1 compute process (pid 7)"}),
    (Reading(gpus(0), tuple(App("GPU-0", str(p), None) for p in range(5))), 1, 1024,
     {0: "5 compute processes (pid 0, 1, 2, ...)"}),
    (Reading(gpus(None, 0)), 2, 1024, {0: "its memory use is not reported"}),
    (Reading(gpus(0, 0)), 4, 1024, {2: "the probe lists no GPU 2", 3: "the probe lists no GPU 3"}),
    (Reading(gpus(0, 0, 5000, 0)), 2, 1024, {}),  # GPUs beyond the host's slots: not ours
    (Reading(gpus(0), (App("GPU-elsewhere", "9", 100),)), 1, 1024, {}),
])
def test_which_gpus_are_busy_and_why(reading, slots, busy_mib, found):
    assert busy(reading, slots, busy_mib) == found


@pytest.mark.parametrize("skipped, said", [
    ({1: "1 compute process (pid 4242)"},
     "host g: skipping GPU 1, in use by others (GPU 1: 1 compute process (pid 4242)); "
     "it takes no job until it is free"),
    ({3: "x", 0: "y"}, "host g: skipping GPUs 0 and 3, in use by others (GPU 0: y; GPU 3: x); "
                       "they take no job until they are free"),
    ({0: "a", 1: "b", 2: "c"}, "host g: skipping GPUs 0, 1 and 2, in use by others"),
    ({}, "host g: no GPU is in use by others now"),
])
def test_what_pegasus_says_of_skipped_gpus(skipped, said):
    assert describe("g", skipped).startswith(said)
