"""release_pages and the KV cache storages regrown with it: memory zeroed by the OS, not written, so it
does not become resident."""
import mmap
import re
import sys

import pytest
import torch

from r1train.heap import regrow_zeroed, release_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc are Linux's")


def resident_mib() -> float:
    return int(re.search(r"^VmRSS:\s+(\d+) kB", open("/proc/self/status").read(), re.M).group(1)) / 1024


def test_released_heap_memory_reads_as_zeros_and_leaves_the_resident_set():
    data = torch.full((16 << 20,), 7, dtype=torch.uint8)  # 16 MiB, every page written
    address = data.data_ptr()
    before = resident_mib()
    [(start, end)] = release_pages([(address, data.numel())])
    assert address <= start < start + 15 * mmap.PAGESIZE and data.numel() - (end - address) < mmap.PAGESIZE
    assert resident_mib() < before - 12
    assert int(data[start - address: end - address].count_nonzero()) == 0
    assert bool((data[: start - address] == 7).all()) and bool((data[end - address:] == 7).all())  # partial pages kept


def vm_flags(address: int) -> list[str]:
    """The VmFlags of the mapping holding `address` (/proc/self/smaps)."""
    inside = False
    for line in open("/proc/self/smaps"):
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            low, high = (int(bound, 16) for bound in line.split()[0].split("-"))
            inside = low <= address < high
        elif inside and line.startswith("VmFlags:"):
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def test_released_memory_goes_back_to_small_pages():
    """Written back a block at a time, a huge page would make 2 MiB resident for each block."""
    data = torch.full((16 << 20,), 7, dtype=torch.uint8)
    [(start, end)] = release_pages([(data.data_ptr(), data.numel())])
    assert "nh" in vm_flags(start) and "nh" in vm_flags(end - 1)


def test_memory_with_a_file_behind_it_is_left_alone(tmp_path):
    """A file's private mapping would read as the file again, not as zeros: nothing is released."""
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x07" * (4 * mmap.PAGESIZE))
    tensor = torch.from_file(str(path), shared=False, size=4 * mmap.PAGESIZE, dtype=torch.uint8)
    address = tensor.data_ptr()
    assert release_pages([(address, tensor.numel())]) == [(address, address)]
    assert bool((tensor == 7).all())


def test_less_than_a_whole_page_releases_nothing():
    data = torch.full((100,), 7, dtype=torch.uint8)
    assert release_pages([(data.data_ptr(), data.numel())]) == [(data.data_ptr(), data.data_ptr())]
    assert bool((data == 7).all())


def test_a_regrown_kv_storage_holds_zeros_not_what_the_heap_held():
    """The storage regrown on wake-up must not carry leftovers of freed memory: infinities there
    made vLLM's CPU attention return NaN completions. A freed block of the same size, filled with
    inf, is what glibc's heap hands out next for a request of that size."""
    nbytes = 1 << 20  # under glibc's mapping threshold: served from the heap
    storage = torch.zeros(nbytes // 4).untyped_storage()
    storage.resize_(0)
    poisoned = torch.full((nbytes // 4,), float("inf"))
    del poisoned
    regrow_zeroed([(storage, nbytes)])
    assert torch.count_nonzero(torch.tensor([], dtype=torch.float32).set_(storage)) == 0


def test_a_regrown_kv_storage_is_not_resident_until_written():
    """The zeros come from the OS: a step that fills part of the cache makes only that part
    resident (writing zeros over 64 MiB would make all of it resident)."""
    nbytes = 64 << 20
    storage = torch.ones(nbytes // 4).untyped_storage()
    storage.resize_(0)
    before = resident_mib()
    regrow_zeroed([(storage, nbytes)])
    assert resident_mib() - before < 16
    assert torch.count_nonzero(torch.tensor([], dtype=torch.float32).set_(storage)) == 0
