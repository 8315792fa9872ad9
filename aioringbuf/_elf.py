"""Reading and resizing the maps of a BPF object file before libbpf sees it.

pylibbpf cannot change a map's size between open and load, and libbpf
silently rounds a bad ring buffer size up. Both are fixed here, on the
object's bytes: BTF-defined maps carry ``max_entries`` as the element count
of an array type (``int (*max_entries)[N]``), so resizing a map means giving
its ``max_entries`` member a new ``int (*)[N]`` type appended to the BTF.
"""

from __future__ import annotations

import struct
from collections.abc import Container
from dataclasses import dataclass

from ._errors import BpfObjectError, MapNotFoundError, MapSizeError
from ._ringmap import MAX_ENTRIES, check_ring_size

EM_BPF = 247
_BTF_MAGIC = 0xEB9F
_RINGBUF = 27

# BTF kinds and the size of the data that follows each btf_type (12 bytes).
_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
_VOLATILE, _CONST, _RESTRICT, _FUNC, _FUNC_PROTO, _VAR, _DATASEC = 9, 10, 11, 12, 13, 14, 15
_FLOAT, _DECL_TAG, _TYPE_TAG, _ENUM64 = 16, 17, 18, 19
_MODIFIERS = (_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG)


def _extra_size(kind: int, vlen: int) -> int:
    if kind in (_INT, _VAR, _DECL_TAG):
        return 4
    if kind == _ARRAY:
        return 12
    if kind in (_STRUCT, _UNION, _DATASEC, _ENUM64):
        return 12 * vlen
    if kind in (_ENUM, _FUNC_PROTO):
        return 8 * vlen
    return 0


@dataclass
class _MapDef:
    name: str
    type: int | None
    max_entries: int | None
    max_entries_member: int | None  # file offset of the member's btf_member


class BpfElf:
    """A BPF ELF object in memory: its sections and its BTF-defined maps."""

    def __init__(self, path: str, data: bytes) -> None:
        self.path = path
        self.data = bytearray(data)
        if data[:4] != b"\x7fELF":
            raise BpfObjectError(
                f"{path} is not an ELF file; pass a BPF object built with "
                "clang -target bpf -g (e.g. make -C bpf)"
            )
        if data[4] != 2 or data[5] != 1:
            raise BpfObjectError(f"{path} is not a 64-bit little-endian ELF object")
        (machine,) = struct.unpack_from("<H", data, 18)
        if machine != EM_BPF:
            raise BpfObjectError(
                f"{path} is an ELF object for machine {machine}, not BPF ({EM_BPF}); "
                "compile it with clang -target bpf"
            )
        self._sections = self._read_sections()
        self.maps = self._read_maps() if ".BTF" in self._sections else {}

    @classmethod
    def from_path(cls, path: str) -> BpfElf:
        try:
            with open(path, "rb") as f:
                return cls(path, f.read())
        except FileNotFoundError:
            raise BpfObjectError(
                f"BPF object file {path} not found; build it (make -C bpf) or pass "
                "the path of an existing .bpf.o"
            ) from None
        except (struct.error, IndexError) as exc:
            raise BpfObjectError(f"{path} is a truncated or corrupt ELF file ({exc})") from None

    def _read_sections(self) -> dict[str, tuple[int, int, int]]:
        d = self.data
        shoff, = struct.unpack_from("<Q", d, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", d, 0x3A)
        if shoff + shnum * shentsize > len(d):
            raise BpfObjectError(f"{self.path} is truncated: its section table is missing")
        headers = []
        for i in range(shnum):
            base = shoff + i * shentsize
            name_off, = struct.unpack_from("<I", d, base)
            off, size = struct.unpack_from("<QQ", d, base + 24)
            if off + size > len(d) and struct.unpack_from("<I", d, base + 4)[0] != 8:
                raise BpfObjectError(f"{self.path} is truncated (section {i} ends past EOF)")
            headers.append((name_off, off, size, base))
        _, str_off, _, _ = headers[shstrndx]
        sections = {}
        for name_off, off, size, base in headers:
            end = d.index(b"\0", str_off + name_off)
            sections[d[str_off + name_off : end].decode()] = (off, size, base)
        return sections

    def tracepoints(self) -> list[tuple[str, str]]:
        """(category, event) of each program in a ``tracepoint/`` or ``tp/`` section:
        attaching them reads the event's id from tracefs."""
        found = []
        for section in self._sections:
            kind, _, rest = section.partition("/")
            category, _, event = rest.partition("/")
            if kind in ("tracepoint", "tp") and category and event:
                found.append((category, event))
        return found

    # -- BTF -------------------------------------------------------------

    def _btf(self) -> tuple[int, list[tuple[int, int, int, int]]]:
        """Return (types start offset, [(file offset, kind, vlen, size_or_type)]) by id."""
        off, _, _ = self._sections[".BTF"]
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = (
            struct.unpack_from("<HBBIIIII", self.data, off)
        )
        if magic != _BTF_MAGIC:
            raise BpfObjectError(f"{self.path} has a corrupt .BTF section")
        self._btf_hdr = (off, hdr_len, type_off, type_len, str_off, str_len)
        pos = off + hdr_len + type_off
        end = pos + type_len
        types: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)]  # id 0 is void
        while pos < end:
            _name, info, size_or_type = struct.unpack_from("<III", self.data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            types.append((pos, kind, vlen, size_or_type))
            pos += 12 + _extra_size(kind, vlen)
        return off + hdr_len + str_off, types

    def _str(self, strings: int, name_off: int) -> str:
        end = self.data.index(b"\0", strings + name_off)
        return self.data[strings + name_off : end].decode()

    def _read_maps(self) -> dict[str, _MapDef]:
        strings, types = self._btf()
        self._types = types

        def skip_mods(tid: int) -> int:
            while types[tid][1] in _MODIFIERS:
                tid = types[tid][3]
            return tid

        def array_len(member_type: int) -> int | None:
            ptr = skip_mods(member_type)
            if types[ptr][1] != _PTR:
                return None
            arr = skip_mods(types[ptr][3])
            if types[arr][1] != _ARRAY:
                return None
            return struct.unpack_from("<III", self.data, types[arr][0] + 12)[2]

        maps: dict[str, _MapDef] = {}
        for pos, kind, vlen, _ in types[1:]:
            if kind != _DATASEC:
                continue
            name_off, = struct.unpack_from("<I", self.data, pos)
            if self._str(strings, name_off) != ".maps":
                continue
            for i in range(vlen):
                var_id, _, _ = struct.unpack_from("<III", self.data, pos + 12 + 12 * i)
                var_pos, _, _, var_type = types[var_id]
                var_name = self._str(strings, struct.unpack_from("<I", self.data, var_pos)[0])
                st = skip_mods(var_type)
                spos, skind, svlen, _ = types[st]
                if skind != _STRUCT:
                    continue
                mdef = _MapDef(var_name, None, None, None)
                for j in range(svlen):
                    mpos = spos + 12 + 12 * j
                    m_name_off, m_type, _ = struct.unpack_from("<III", self.data, mpos)
                    m_name = self._str(strings, m_name_off)
                    if m_name == "type":
                        mdef.type = array_len(m_type)
                    elif m_name == "max_entries":
                        mdef.max_entries = array_len(m_type)
                        mdef.max_entries_member = mpos
                maps[var_name] = mdef
        return maps

    def check_ring_sizes(self, skip: Container[str] = ()) -> None:
        """Refuse ring buffer sizes that libbpf would silently round up."""
        for m in self.maps.values():
            if m.type == _RINGBUF and m.max_entries is not None and m.name not in skip:
                what = f"ring buffer map {m.name!r} in {self.path} has size"
                check_ring_size(m.max_entries, what)

    def set_max_entries(self, sizes: dict[str, int]) -> None:
        """Give maps new sizes by pointing their max_entries at new BTF types.

        Every size is checked before anything is rewritten.
        """
        if not sizes:
            return
        for name, size in sizes.items():
            m = self.maps.get(name)
            if m is None or m.max_entries_member is None:
                known = ", ".join(sorted(self.maps)) or "none"
                raise MapNotFoundError(
                    f"cannot resize map {name!r}: no such map in {self.path} (maps: {known})"
                )
            if m.type == _RINGBUF:
                check_ring_size(size, f"ring size for map {name!r}")
            elif (not isinstance(size, int) or isinstance(size, bool)
                  or not 1 <= size <= MAX_ENTRIES):
                raise MapSizeError(f"size {size!r} for map {name!r} is invalid: max_entries "
                                   f"must be an int from 1 to {MAX_ENTRIES}")
        new_types = bytearray()
        next_id = len(self._types)
        for name, size in sizes.items():
            m = self.maps[name]
            assert m.max_entries_member is not None
            old_ptr = struct.unpack_from("<I", self.data, m.max_entries_member + 4)[0]
            old_arr = self._types[old_ptr][3]
            arr_pos = self._types[old_arr][0]
            elem, index, _ = struct.unpack_from("<III", self.data, arr_pos + 12)
            arr_id, ptr_id = next_id, next_id + 1
            next_id += 2
            new_types += struct.pack("<IIIIII", 0, _ARRAY << 24, 0, elem, index, size)
            new_types += struct.pack("<III", 0, _PTR << 24, arr_id)
            struct.pack_into("<I", self.data, m.max_entries_member + 4, ptr_id)
            m.max_entries = size
        self._append_btf_types(bytes(new_types))

    def _append_btf_types(self, extra: bytes) -> None:
        """Rebuild .BTF with ``extra`` types at the end, placed at the end of the file."""
        off, hdr_len, type_off, type_len, str_off, str_len = self._btf_hdr
        d = self.data
        hdr = bytearray(d[off : off + hdr_len])
        types = d[off + hdr_len + type_off : off + hdr_len + type_off + type_len]
        strs = d[off + hdr_len + str_off : off + hdr_len + str_off + str_len]
        struct.pack_into("<IIII", hdr, 8, 0, type_len + len(extra), type_len + len(extra), str_len)
        blob = bytes(hdr) + bytes(types) + extra + bytes(strs)
        new_off = (len(d) + 7) & ~7
        d += b"\0" * (new_off - len(d)) + blob
        _, _, sh_base = self._sections[".BTF"]
        struct.pack_into("<QQ", d, sh_base + 24, new_off, len(blob))
