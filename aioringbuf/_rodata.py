"""Setting a BPF object's ``const volatile`` globals before it is loaded.

libbpf loads ``.rodata`` from the object file's section bytes and freezes
it, so the verifier sees the values as constants and drops code that a
setting makes dead (an unused filter costs nothing). pylibbpf cannot set
them between open and load; writing them into the file's bytes can.
"""

from __future__ import annotations

import struct

from ._errors import BpfObjectError

_SHT_SYMTAB = 2


def set_rodata(data: bytearray, values: dict[str, bytes], path: str = "object") -> None:
    """Overwrite the ``.rodata`` symbols named in ``values`` with those bytes."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = []
    for i in range(shnum):
        base = shoff + i * shentsize
        name, sh_type = struct.unpack_from("<II", data, base)
        off, size = struct.unpack_from("<QQ", data, base + 24)
        link, = struct.unpack_from("<I", data, base + 40)
        entsize, = struct.unpack_from("<Q", data, base + 56)
        sections.append((name, sh_type, off, size, link, entsize))
    shstr = sections[shstrndx][2]

    def cstr(at: int) -> str:
        return bytes(data[at : data.index(b"\0", at)]).decode()

    names = [cstr(shstr + s[0]) for s in sections]
    if ".rodata" not in names:
        raise BpfObjectError(f"{path} has no .rodata section to set {sorted(values)} in")
    rodata = names.index(".rodata")
    r_off, r_size = sections[rodata][2], sections[rodata][3]
    symtab = next((s for s in sections if s[1] == _SHT_SYMTAB), None)
    if symtab is None:
        raise BpfObjectError(f"{path} has no symbol table (stripped too far?)")
    _, _, off, size, link, entsize = symtab
    strtab = sections[link][2]
    left = dict(values)
    for pos in range(off, off + size, entsize or 24):
        st_name, _info, _other, shndx, value, sym_size = struct.unpack_from("<IBBHQQ", data, pos)
        if shndx != rodata:
            continue
        name = cstr(strtab + st_name)
        if name not in left:
            continue
        raw = left.pop(name)
        if len(raw) != sym_size or value + sym_size > r_size:
            raise BpfObjectError(f"{path}: {name} is {sym_size} bytes, not {len(raw)}")
        data[r_off + value : r_off + value + sym_size] = raw
    if left:
        raise BpfObjectError(f"{path} has no .rodata variable {', '.join(sorted(left))}")
