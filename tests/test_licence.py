"""The licences the code declares agree with the ones the package ships.

Every BPF object says SEC("license") = "Dual BSD/GPL" (LICENSE explains
why), the kernel takes that as GPL-compatible (GPL-only helpers stay
callable), and every BPF source names the same SPDX expression.
"""

from __future__ import annotations

import os
import pathlib
import struct

import pytest

import aioringbuf
from aioringbuf import _syscall

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE_OBJECTS = sorted((ROOT / "aioringbuf" / "_bpf").glob("*.bpf.o"))
BPF_SPDX = "SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause"


def elf_section(path: pathlib.Path, wanted: str) -> tuple[int, bytes]:
    """The file offset and bytes of section ``wanted`` of a little-endian ELF64 file."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, f"{path}: not ELF64 LE"
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def header(i: int) -> tuple[int, int, int]:
        name, _, _, _, off, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, off, size

    _, stroff, _ = header(shstrndx)
    for i in range(shnum):
        name, off, size = header(i)
        end = data.index(b"\0", stroff + name)
        if data[stroff + name:end].decode() == wanted:
            return off, data[off:off + size]
    raise LookupError(f"{path} has no {wanted} section")


def test_the_package_ships_its_programs() -> None:
    assert [p.name for p in PACKAGE_OBJECTS] == ["exec.bpf.o"]


@pytest.mark.parametrize("path", PACKAGE_OBJECTS, ids=lambda p: p.name)
def test_package_objects_declare_dual_bsd_gpl(path: pathlib.Path) -> None:
    assert elf_section(path, "license")[1] == b"Dual BSD/GPL\0"


def test_every_bpf_source_names_the_same_licence() -> None:
    sources = [*ROOT.glob("bpf/**/*.bpf.c"), *ROOT.glob("bpf/**/*.h"),
               *ROOT.glob("benchmarks/bpf/*"), *ROOT.glob("aioringbuf/include/*.h")]
    sources = [p for p in sources if "build" not in p.relative_to(ROOT).parts]
    assert len(sources) >= 10
    wrong = [str(p.relative_to(ROOT)) for p in sources
             if BPF_SPDX not in p.read_text().splitlines()[0]]
    assert wrong == []
    for path in sources:
        if path.name.endswith(".bpf.c"):
            assert 'SEC("license") = "Dual BSD/GPL";' in path.read_text(), path


def test_the_licence_texts_are_there() -> None:
    for name in ("MIT.txt", "BSD-2-Clause.txt", "GPL-2.0-only.txt"):
        assert (ROOT / "LICENSES" / name).stat().st_size > 900, name
    assert "MIT AND (GPL-2.0-only OR BSD-2-Clause)" in (ROOT / "LICENSE").read_text()


def test_the_kernel_takes_the_exec_programs_as_gpl_compatible(kernel: None) -> None:
    from aioringbuf._exec import EXEC_OBJECT

    with aioringbuf.load(EXEC_OBJECT, attach=False) as obj:
        names = obj.program_names
        assert len(names) >= 4
        for name in names:
            fd = obj.program_fd(name)
            try:
                info = _syscall.prog_info(fd)
            finally:
                os.close(fd)
            assert info.gpl_compatible, name


def test_a_non_gpl_program_is_reported_as_such(bpf_objects: pathlib.Path) -> None:
    """The check above can fail: the same flag reads False for a proprietary licence."""
    data = (bpf_objects / "getpgid.bpf.o").read_bytes()
    at, sec = elf_section(bpf_objects / "getpgid.bpf.o", "license")
    patched = data[:at] + b"Proprietary\0".ljust(len(sec), b"\0") + data[at + len(sec):]
    path = bpf_objects / f"proprietary-{os.getpid()}.bpf.o"
    path.write_bytes(patched)
    try:
        with aioringbuf.load(path, attach=False) as obj:
            for name in obj.program_names:
                fd = obj.program_fd(name)
                try:
                    assert not _syscall.prog_info(fd).gpl_compatible, name
                finally:
                    os.close(fd)
    finally:
        path.unlink()
