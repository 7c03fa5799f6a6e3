"""Readable, PTX-flavoured text of a thread-IR kernel: `mod.source("thread")`.

One statement per line; nested blocks (For/If/Loop) are indented and closed by
a `}` line. Registers print as `%name`, immediates as their value (floats with
repr precision, integers in hex when they look like bit patterns). This is for
people: it is close to PTX but not assemblable (backends/ptx.py does that).
"""
from __future__ import annotations

import math

from . import thread as T


def format_operand(x) -> str:
    if isinstance(x, T.Reg):
        return f"%{x.name}"
    if isinstance(x, T.Imm):
        v = x.value
        if isinstance(v, float):
            if math.isnan(v) or math.isinf(v):
                return str(v)
            return repr(v)
        if x.type.is_float and x.type.name not in ("f32", "f64"):   # raw bits of a 16-bit/packed float
            return f"0x{v & ((1 << x.type.nbits) - 1):x}"
        if x.type.kind == "b" or abs(v) >= 4096:
            return hex(v)
        return str(v)
    if x is None:
        return "_"
    return str(x)


def _vec(xs) -> str:
    xs = tuple(xs)
    if len(xs) == 1:
        return format_operand(xs[0])
    return "{" + ", ".join(format_operand(x) for x in xs) + "}"


def _guard(pred) -> str:
    return f"@%{pred.name} " if pred is not None else ""


def _addr(addr, offset: int) -> str:
    a = format_operand(addr)
    if offset:
        return f"[{a}{offset:+d}]"
    return f"[{a}]"


def _vsuffix(n: int) -> str:
    return "" if n == 1 else f".v{n}"


def format_stmt(s: T.Stmt) -> str:
    """One line for a non-block statement (block headers for For/If/Loop)."""
    o = format_operand
    if isinstance(s, T.SpecialReg):
        return f"mov.{s.dst.type} {o(s.dst)}, {s.which.value};"
    if isinstance(s, T.SharedBase):
        return f"mov.u32 {o(s.dst)}, smem;  // shared base"
    if isinstance(s, T.Mov):
        return f"mov.{s.dst.type} {o(s.dst)}, {o(s.src)};"
    if isinstance(s, T.Unary):
        return f"{s.op.value}.{s.dst.type} {o(s.dst)}, {o(s.a)};"
    if isinstance(s, T.Binary):
        ty = s.a.type if s.op is T.BinOp.MUL_WIDE else s.dst.type
        return f"{s.op.value}.{ty} {o(s.dst)}, {o(s.a)}, {o(s.b)};"
    if isinstance(s, T.Fma):
        name = "fma.rn" if s.dst.type.is_float else "mad.lo"
        return f"{name}.{s.dst.type} {o(s.dst)}, {o(s.a)}, {o(s.b)}, {o(s.c)};"
    if isinstance(s, T.Setp):
        cmp = "neu" if s.cmp is T.Cmp.NE and s.a.type.is_float else s.cmp.value
        return f"setp.{cmp}.{s.a.type} {o(s.dst)}, {o(s.a)}, {o(s.b)};"
    if isinstance(s, T.Selp):
        return f"selp.{s.dst.type} {o(s.dst)}, {o(s.a)}, {o(s.b)}, {o(s.pred)};"
    if isinstance(s, T.Cvt):
        mods = (f".{s.rounding.value}" if s.rounding else "") + (".sat" if s.saturate else "")
        return f"cvt{mods}.{s.dst.type}.{s.src.type} {o(s.dst)}, {o(s.src)};"
    if isinstance(s, T.CvtPack):
        return f"cvt.rn.{s.dst.type}.f32 {o(s.dst)}, {o(s.hi)}, {o(s.lo)};"
    if isinstance(s, T.Lop3):
        return f"lop3.b32 {o(s.dst)}, {o(s.a)}, {o(s.b)}, {o(s.c)}, 0x{s.lut:02x};"
    if isinstance(s, T.Prmt):
        return f"prmt.b32 {o(s.dst)}, {o(s.a)}, {o(s.b)}, {o(s.selector)};"
    if isinstance(s, T.Shf):
        return (f"shf.{'l' if s.left else 'r'}.{'clamp' if s.clamp else 'wrap'}.b32 "
                f"{o(s.dst)}, {o(s.lo)}, {o(s.hi)}, {o(s.shift)};")
    if isinstance(s, T.Bfe):
        return f"bfe.{s.dst.type} {o(s.dst)}, {o(s.a)}, {o(s.pos)}, {o(s.length)};"
    if isinstance(s, T.Load):
        return (f"{_guard(s.pred)}ld.{s.space.value}{_vsuffix(len(s.dsts))}.{s.dsts[0].type} "
                f"{_vec(s.dsts)}, {_addr(s.addr, s.offset)};")
    if isinstance(s, T.Store):
        ty = s.srcs[0].type
        return (f"{_guard(s.pred)}st.{s.space.value}{_vsuffix(len(s.srcs))}.{ty} "
                f"{_addr(s.addr, s.offset)}, {_vec(s.srcs)};")
    if isinstance(s, T.AtomicAdd):
        ty = s.dst.type if s.dst is not None else s.value.type
        if s.dst is None:
            return f"{_guard(s.pred)}red.{s.space.value}.add.{ty} {_addr(s.addr, s.offset)}, {o(s.value)};"
        return (f"{_guard(s.pred)}atom.{s.space.value}.add.{ty} {o(s.dst)}, "
                f"{_addr(s.addr, s.offset)}, {o(s.value)};")
    if isinstance(s, T.CpAsync):
        tail = f", {o(s.src_size)}" if s.src_size is not None else ""
        kind = "cg" if s.size == 16 else "ca"
        return (f"{_guard(s.pred)}cp.async.{kind}.shared.global [{o(s.dst_addr)}], "
                f"[{o(s.src_addr)}], {s.size}{tail};")
    if isinstance(s, T.CpAsyncCommit):
        return "cp.async.commit_group;"
    if isinstance(s, T.CpAsyncWait):
        return f"cp.async.wait_group {s.n};"
    if isinstance(s, T.Barrier):
        return "bar.sync 0;"
    if isinstance(s, T.Shfl):
        return (f"shfl.sync.{s.mode.value}.b32 {o(s.dst)}, {o(s.src)}, {o(s.lane)}, "
                f"0x{s.clamp:x}, 0x{s.mask:08x};")
    if isinstance(s, T.Ldmatrix):
        return (f"ldmatrix.sync.aligned.m8n8.x{len(s.dsts)}{'.trans' if s.trans else ''}.shared.b16 "
                f"{_vec(s.dsts)}, [{o(s.addr)}];")
    if isinstance(s, T.Mma):
        ab = s.ab_type.name
        return (f"mma.sync.aligned.{s.shape.value}.row.col.f32.{ab}.{ab}.f32 "
                f"{_vec(s.d)}, {_vec(s.a)}, {_vec(s.b)}, {_vec(s.c)};")
    if isinstance(s, T.Comment):
        return f"// {s.text}"
    if isinstance(s, T.For):
        unroll = f"  // unroll {s.unroll}" if s.unroll is not None else ""
        v = o(s.var)
        return f"for {v} = {o(s.start)}; {v} < {o(s.stop)}; {v} += {s.step} {{{unroll}"
    if isinstance(s, T.If):
        return f"if %{s.pred.name} {{"
    if isinstance(s, T.Loop):
        return "loop {"
    if isinstance(s, T.Break):
        return f"{_guard(s.pred)}break;"
    if isinstance(s, T.Continue):
        return f"{_guard(s.pred)}continue;"
    if isinstance(s, T.Return):
        return "ret;"
    return f"<{type(s).__name__}>;"


def format_body(body, indent: int = 1) -> list[str]:
    pad = "    " * indent
    lines: list[str] = []
    for s in body:
        lines.append(pad + format_stmt(s))
        if isinstance(s, T.If):
            lines.extend(format_body(s.then, indent + 1))
            if s.orelse:
                lines.append(pad + "} else {")
                lines.extend(format_body(s.orelse, indent + 1))
            lines.append(pad + "}")
        elif isinstance(s, (T.For, T.Loop)):
            lines.extend(format_body(s.body, indent + 1))
            lines.append(pad + "}")
    return lines


def format_thread_kernel(kernel: T.ThreadKernel) -> str:
    """The whole kernel: header with params, threads and shared bytes, register
    declarations grouped by type, then the body."""
    params = ", ".join(f".param .{p.type} {p.name}" for p in kernel.params)
    lines = [f".entry {kernel.name}({params})",
             f"    // threads {kernel.threads}, shared {kernel.shared_bytes} bytes"
             + (f", min {kernel.min_blocks} blocks per SM" if kernel.min_blocks else ""), "{"]
    by_type: dict[str, list[str]] = {}
    pset = set(kernel.params)
    for r in T.all_regs(kernel):
        if r not in pset:
            by_type.setdefault(r.type.name, []).append(f"%{r.name}")
    for ty, names in by_type.items():
        lines.append(f"    .reg .{ty} {', '.join(names)};")
    lines.extend(format_body(kernel.body, 1))
    lines.append("}")
    return "\n".join(lines) + "\n"
