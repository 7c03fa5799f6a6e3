"""Thread IR -> PTX text, one statement to one instruction (or a fixed few).

    emit_ptx(kernel: thread.ThreadKernel, sm: int) -> str

What the printer guarantees (checked by assembling with nvJitLink for sm_80,
sm_89 and sm_90 in tests/test_ptx.py):
* `.version 8.0` (sm_90/sm_89 need >= 7.8; a CUDA 12.x/13.0 driver JIT takes
  it), `.target sm_XX`, `.address_size 64`, `.maxntid threads, 1, 1`, and
  `.minnctapersm N` for a kernel declared with `min_blocks=N`.
* Virtual registers are declared with their type. Integer and bit registers
  are declared as `.b{N}` (every integer instruction type accepts them, and
  so do `mma`'s operands and the packed float instructions); `f32`, `f64`,
  `f16`, `f16x2` keep their float type; `bf16`/`bf16x2` are `.b16`/`.b32`,
  as PTX has no bf16 register type before 7.8. 8-bit values (u8/s8/b8) live
  in `.b16` registers, zero- or sign-extended, because PTX has 8-bit types
  only in ld/st/cvt: arithmetic on them uses the 16-bit instruction and
  re-extends its result (`and.b16 255` / `cvt.s16.s8`). Names are the thread IR's,
  sanitized and prefixed with `%`; the printer's own temporaries are `%tmp_*`.
* Params: one `.param` per ThreadKernel param, loaded into its register with
  `ld.param` at entry. Shared memory is one dynamic buffer,
  `.extern .shared .align 16 .b8 tl_smem[]`, whose address SharedBase reads.
* Float arithmetic carries `.rn` (`add.rn.f32`, `mul.rn.f32`) so that ptxas
  never contracts a mul and an add into an fma the thread IR did not ask for
  (the emulator computes each rounding separately). min/max on floats use
  `.NaN` (NaN propagates, as in numpy and the VM).
* Predicated memory operations print `@%p`; loads and stores of 2 or 4
  registers print `.v2`/`.v4`.
* Structured control flow becomes labels and branches with unique labels.
  A branch is `bra.uni` only when its predicate is provably warp-uniform:
  computed only from params, ctaid/ntid/warp id, immediates and the shared
  base, outside any non-uniform branch (`UniformityAnalysis`).
* Immediates: floats in hex (`0f3F800000`, `0d3FF0000000000000`); 16-bit and
  packed float immediates (which PTX arithmetic does not take) are moved into
  a temporary register first.
* Where a PTX form does not exist for the target, the printer emits the
  shortest exact equivalent: bf16x2 add/sub/mul before sm_90 become
  `fma.rn.bf16x2` with 1.0 or -0.0; conversions between bf16 and non-f32 types
  go through f32.
Anything the printer cannot express raises TLCompileError (a compiler bug).
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from ..errors import TLCompileError
from ..ir import thread as T

PTX_VERSION = "8.0"
SHARED_SYMBOL = "tl_smem"

_SPACE = {T.Space.GLOBAL: "global", T.Space.SHARED: "shared", T.Space.LOCAL: "local"}

_SREG = {
    T.SReg.TID_X: "%tid.x",
    T.SReg.NTID_X: "%ntid.x",
    T.SReg.CTAID_X: "%ctaid.x",
    T.SReg.CTAID_Y: "%ctaid.y",
    T.SReg.CTAID_Z: "%ctaid.z",
    T.SReg.LANEID: "%laneid",
}

# Registers whose value is the same in every thread of a warp (for bra.uni).
_UNIFORM_SREGS = {T.SReg.NTID_X, T.SReg.CTAID_X, T.SReg.CTAID_Y, T.SReg.CTAID_Z, T.SReg.WARPID}

_SHFL = {T.ShflMode.IDX: "idx", T.ShflMode.UP: "up", T.ShflMode.DOWN: "down", T.ShflMode.BFLY: "bfly"}

_ROUND = {T.Rounding.RN: ".rn", T.Rounding.RZ: ".rz", T.Rounding.RM: ".rm", T.Rounding.RP: ".rp",
          T.Rounding.RNI: ".rni", T.Rounding.RZI: ".rzi", T.Rounding.RMI: ".rmi", T.Rounding.RPI: ".rpi"}

_SIGNED_CMP = {T.Cmp.EQ: "eq", T.Cmp.NE: "ne", T.Cmp.LT: "lt", T.Cmp.LE: "le", T.Cmp.GT: "gt", T.Cmp.GE: "ge"}
_UNSIGNED_CMP = {T.Cmp.EQ: "eq", T.Cmp.NE: "ne", T.Cmp.LT: "lo", T.Cmp.LE: "ls", T.Cmp.GT: "hi", T.Cmp.GE: "hs"}
# Ordered comparisons, except NE which is unordered: NaN != x is true (numpy).
_FLOAT_CMP = {T.Cmp.EQ: "eq", T.Cmp.NE: "neu", T.Cmp.LT: "lt", T.Cmp.LE: "le", T.Cmp.GT: "gt", T.Cmp.GE: "ge"}

_UNARY_INT = {T.UnOp.NEG: "neg", T.UnOp.NOT: "not", T.UnOp.ABS: "abs", T.UnOp.POPC: "popc", T.UnOp.CLZ: "clz"}
# Float unary ops: exact (.rn) where PTX has it, else the .approx form.
_UNARY_FLOAT = {T.UnOp.NEG: "neg", T.UnOp.ABS: "abs", T.UnOp.RCP: "rcp.rn", T.UnOp.SQRT: "sqrt.rn",
                T.UnOp.EX2: "ex2.approx", T.UnOp.LG2: "lg2.approx", T.UnOp.SIN: "sin.approx",
                T.UnOp.COS: "cos.approx", T.UnOp.TANH: "tanh.approx"}
_UNARY_F16 = {T.UnOp.NEG: "neg", T.UnOp.ABS: "abs", T.UnOp.EX2: "ex2.approx", T.UnOp.TANH: "tanh.approx"}

_BINARY_INT = {T.BinOp.ADD: "add", T.BinOp.SUB: "sub", T.BinOp.MUL: "mul.lo", T.BinOp.MUL_HI: "mul.hi",
               T.BinOp.MUL_WIDE: "mul.wide", T.BinOp.DIV: "div", T.BinOp.REM: "rem", T.BinOp.MIN: "min",
               T.BinOp.MAX: "max"}
_BINARY_BITS = {T.BinOp.AND: "and", T.BinOp.OR: "or", T.BinOp.XOR: "xor", T.BinOp.SHL: "shl"}
_BINARY_FLOAT = {T.BinOp.ADD: "add.rn", T.BinOp.SUB: "sub.rn", T.BinOp.MUL: "mul.rn", T.BinOp.DIV: "div.rn",
                 T.BinOp.MIN: "min.NaN", T.BinOp.MAX: "max.NaN"}
_BINARY_PACKED = {T.BinOp.ADD: "add.rn", T.BinOp.SUB: "sub.rn", T.BinOp.MUL: "mul.rn",
                  T.BinOp.MIN: "min.NaN", T.BinOp.MAX: "max.NaN"}

_BF16X2_ONE = 0x3F803F80        # (1.0, 1.0)
_BF16X2_NEG_ZERO = 0x80008000   # (-0.0, -0.0): x*y + (-0) == x*y, signs of zero included
_BF16X2_NEG_ONE = 0xBF80BF80    # (-1.0, -1.0)


def _fail(message: str):
    raise TLCompileError(f"PTX printer: {message}")


# --------------------------------------------------------------- type names


def reg_decl_type(t: T.HWType) -> str:
    """The `.reg` type a register of thread-IR type t is declared with."""
    if t.is_pred:
        return "pred"
    if t.name in ("f32", "f64", "f16", "f16x2"):
        return t.name
    return f"b{_reg_bits(t)}"


def _reg_bits(t: T.HWType) -> int:
    """The width of t's register: 8-bit values live in 16-bit registers, as
    PTX allows 8-bit types only in ld, st and cvt. Such a register always
    holds its value zero-extended (unsigned, bit) or sign-extended (signed)."""
    return 16 if t.nbits == 8 else t.nbits


def arith_int_type(t: T.HWType) -> str:
    """The integer type of an arithmetic instruction on t (8-bit types use
    their 16-bit register form: see _reg_bits)."""
    name = int_type(t)
    return name[0] + "16" if t.nbits == 8 else name


def int_type(t: T.HWType) -> str:
    """The integer instruction type of t: sN for signed, uN for unsigned and bit types."""
    if t.is_float or t.is_pred:
        _fail(f"{t.name} is not an integer type")
    return f"s{t.nbits}" if t.is_signed else f"u{t.nbits}"


def _is_bf16(t: T.HWType) -> bool:
    return t.name in ("bf16", "bf16x2")


def _cvt_type(t: T.HWType) -> str:
    if t.is_float:
        return t.name
    return int_type(t)


# ------------------------------------------------------------- immediates


def _float_bits(value: float, t: T.HWType) -> int:
    import numpy as np
    if t.name == "f16":
        return int(np.array(value, np.float16).view(np.uint16))
    if t.name == "bf16":
        import ml_dtypes
        return int(np.array(value, ml_dtypes.bfloat16).view(np.uint16))
    _fail(f"no float bit pattern for {t.name}")


def format_imm(imm: T.Imm) -> str:
    """An immediate operand in PTX syntax."""
    t, v = imm.type, imm.value
    if t.is_pred:
        return "1" if v else "0"
    if t.name == "f32":
        return "0f%08X" % struct.unpack("<I", struct.pack("<f", float(v)))[0]
    if t.name == "f64":
        return "0d%016X" % struct.unpack("<Q", struct.pack("<d", float(v)))[0]
    if t.name in ("f16", "bf16"):
        bits = int(v) if isinstance(v, int) and not isinstance(v, bool) else _float_bits(float(v), t)
        return "0x%04X" % (bits & 0xFFFF)
    if t.is_packed:
        if not isinstance(v, int):
            _fail(f"a {t.name} immediate must be its 32-bit pattern, got {v!r}")
        return "0x%08X" % (v & 0xFFFFFFFF)
    if isinstance(v, float):
        if not v.is_integer():
            _fail(f"integer immediate of type {t.name} has a fractional value {v!r}")
        v = int(v)
    v = int(v)
    if t.is_signed:
        return str(v)
    v &= (1 << t.nbits) - 1
    return str(v) if v < 1 << 16 else "0x%X" % v


# ------------------------------------------------------------ uniformity


class UniformityAnalysis:
    """Which registers hold the same value in every thread of a warp.

    Start by assuming every register uniform, then mark a register divergent
    when any definition of it reads a divergent register, is a source of
    per-thread values (tid, laneid, loads, shuffles, mma, atomics, ...) or sits
    under a branch on a divergent predicate; repeat to a fixed point. The
    result is conservative: `uniform` holds only provably uniform registers.
    """

    _PURE = ()   # filled lazily: statement types whose result depends only on their operands

    def __init__(self, kernel: T.ThreadKernel):
        self.divergent: set = set()
        changed = True
        while changed:
            changed = False
            before = len(self.divergent)
            self._block(kernel.body, divergent_context=False)
            changed = len(self.divergent) != before

    def is_uniform(self, op) -> bool:
        return isinstance(op, T.Imm) or op not in self.divergent

    def _mark(self, regs) -> None:
        for r in regs:
            self.divergent.add(r)

    def _block(self, body, divergent_context: bool) -> None:
        for s in body:
            self._stmt(s, divergent_context)

    def _stmt(self, s, ctx: bool) -> None:
        if isinstance(s, T.If):
            inner = ctx or not self.is_uniform(s.pred)
            self._block(s.then, inner)
            self._block(s.orelse, inner)
            return
        if isinstance(s, T.For):
            inner = ctx or not (self.is_uniform(s.start) and self.is_uniform(s.stop))
            if inner:
                self._mark([s.var])
            self._block(s.body, inner)
            # The loop variable is also updated from itself; a body that
            # breaks or continues divergently makes the trip count divergent.
            if self._has_divergent_exit(s.body):
                self._mark([s.var])
                self._block(s.body, True)
            return
        if isinstance(s, T.Loop):
            inner = ctx or self._has_divergent_exit(s.body)
            self._block(s.body, inner)
            return
        written = _written(s)
        if not written:
            return
        if ctx or not self._uniform_value(s):
            self._mark(written)

    def _has_divergent_exit(self, body) -> bool:
        for s in _walk(body):
            if isinstance(s, (T.Break, T.Continue, T.Return)):
                pred = getattr(s, "pred", None)
                if pred is not None and not self.is_uniform(pred):
                    return True
            if isinstance(s, T.If) and not self.is_uniform(s.pred):
                if any(isinstance(x, (T.Break, T.Continue, T.Return)) for x in _walk(s.then + s.orelse)):
                    return True
        return False

    def _uniform_value(self, s) -> bool:
        if isinstance(s, T.SpecialReg):
            return s.which in _UNIFORM_SREGS
        if isinstance(s, T.SharedBase):
            return True
        if isinstance(s, (T.Mov, T.Unary, T.Binary, T.Fma, T.Setp, T.Selp, T.Cvt, T.CvtPack,
                          T.Lop3, T.Prmt, T.Shf, T.Bfe)):
            return all(self.is_uniform(op) for op in _read_operands(s))
        return False   # loads, shuffles, ldmatrix, mma, atomics: per-thread values


def _written(s) -> tuple:
    if isinstance(s, (T.Load, T.Ldmatrix)):
        return tuple(s.dsts)
    if isinstance(s, T.Mma):
        return tuple(s.d)
    if isinstance(s, T.For):
        return (s.var,)
    dst = getattr(s, "dst", None)
    return (dst,) if isinstance(dst, T.Reg) else ()


def _read_operands(s) -> tuple:
    if isinstance(s, T.Mov):
        return (s.src,)
    if isinstance(s, T.Unary):
        return (s.a,)
    if isinstance(s, T.Binary):
        return (s.a, s.b)
    if isinstance(s, T.Fma):
        return (s.a, s.b, s.c)
    if isinstance(s, T.Setp):
        return (s.a, s.b)
    if isinstance(s, T.Selp):
        return (s.a, s.b, s.pred)
    if isinstance(s, T.Cvt):
        return (s.src,)
    if isinstance(s, T.CvtPack):
        return (s.hi, s.lo)
    if isinstance(s, T.Lop3):
        return (s.a, s.b, s.c)
    if isinstance(s, T.Prmt):
        return (s.a, s.b, s.selector)
    if isinstance(s, T.Shf):
        return (s.lo, s.hi, s.shift)
    if isinstance(s, T.Bfe):
        return (s.a, s.pos, s.length)
    return ()


def _children(s) -> tuple:
    if isinstance(s, T.If):
        return tuple(s.then) + tuple(s.orelse)
    if isinstance(s, (T.For, T.Loop)):
        return tuple(s.body)
    return ()


def _walk(body):
    for s in body:
        yield s
        yield from _walk(_children(s))


def _all_regs(kernel: T.ThreadKernel) -> list:
    """Every register the kernel mentions, in first-mention order."""
    seen: dict = {}

    def add(x):
        if isinstance(x, T.Reg) and x not in seen:
            seen[x] = None
        elif isinstance(x, (tuple, list)):
            for y in x:
                add(y)

    for p in kernel.params:
        add(p)
    for s in _walk(kernel.body):
        for f in s.__dataclass_fields__:
            if f in ("body", "then", "orelse"):
                continue
            add(getattr(s, f))
    return list(seen)


# ------------------------------------------------------------------ printer


@dataclass
class _LoopLabels:
    continue_label: str
    break_label: str


@dataclass
class _Printer:
    kernel: T.ThreadKernel
    sm: int
    lines: list = field(default_factory=list)
    names: dict = field(default_factory=dict)          # Reg -> PTX name
    temps: dict = field(default_factory=dict)          # decl type -> count
    label_count: int = 0
    loops: list = field(default_factory=list)          # stack of _LoopLabels
    uniform: UniformityAnalysis | None = None
    uses_shared: bool = False

    # -- names

    def name_registers(self) -> None:
        used = set()
        for r in _all_regs(self.kernel):
            base = "%" + (re.sub(r"[^A-Za-z0-9_]", "_", r.name) or "r")
            if base[1].isdigit():
                base = "%r" + base[1:]
            if base.startswith("%tmp_"):
                base = "%u" + base[1:]      # the printer's temporaries own %tmp_
            name, n = base, 1
            while name in used or name[1:] in _RESERVED:
                name = f"{base}_{n}"
                n += 1
            used.add(name)
            self.names[r] = name

    def temp(self, t: T.HWType) -> str:
        decl = reg_decl_type(t)
        n = self.temps.get(decl, 0)
        self.temps[decl] = n + 1
        return f"%tmp_{decl}_{n}"

    def label(self, kind: str) -> str:
        self.label_count += 1
        return f"$L_{kind}_{self.label_count}"

    # -- operands

    def reg(self, r) -> str:
        if not isinstance(r, T.Reg):
            _fail(f"expected a register, got {r!r}")
        try:
            return self.names[r]
        except KeyError:
            _fail(f"register {r.name}:{r.type.name} was never declared")

    def op(self, x) -> str:
        """An operand as it may appear in any instruction: 16-bit and packed
        float immediates are first moved into a temporary register."""
        if isinstance(x, T.Reg):
            return self.reg(x)
        if not isinstance(x, T.Imm):
            _fail(f"expected an operand, got {x!r}")
        if x.type.name in ("f16", "bf16", "f16x2", "bf16x2"):
            tmp = self.temp(x.type)
            self.emit(f"mov.b{x.type.nbits} {tmp}, {format_imm(x)};")
            return tmp
        return format_imm(x)

    def reg_op(self, x, t: T.HWType | None = None) -> str:
        """An operand that must be a register (immediates go through a temporary)."""
        if isinstance(x, T.Reg):
            return self.reg(x)
        t = t or x.type
        tmp = self.temp(t)
        mov_type = "pred" if t.is_pred else (t.name if t.name in ("f32", "f64") else f"b{_reg_bits(t)}")
        self.emit(f"mov.{mov_type} {tmp}, {format_imm(T.Imm(x.value, t))};")
        return tmp

    def address(self, addr, offset: int) -> str:
        base = self.reg(addr) if isinstance(addr, T.Reg) else format_imm(addr)
        if offset:
            return f"[{base}+{offset}]" if offset > 0 else f"[{base}{offset}]"
        return f"[{base}]"

    def guard(self, pred) -> str:
        return f"@{self.reg(pred)} " if pred is not None else ""

    def emit(self, text: str) -> None:
        self.lines.append("\t" + text)

    def narrow8(self, r: "T.Reg") -> None:
        """Re-extend an 8-bit value computed in its 16-bit register (_reg_bits)."""
        if r.type.nbits != 8 or r.type.is_float or r.type.is_pred:
            return
        if r.type.is_signed:
            self.emit(f"cvt.s16.s8 {self.reg(r)}, {self.reg(r)};")
        else:
            self.emit(f"and.b16 {self.reg(r)}, {self.reg(r)}, 255;")

    def emit_label(self, label: str) -> None:
        self.lines.append(f"{label}:")

    # -- statements

    def block(self, body) -> None:
        for s in body:
            method = _DISPATCH.get(type(s))
            if method is None:
                _fail(f"no PTX form for {type(s).__name__}")
            method(self, s)

    def comment(self, s: "T.Comment") -> None:
        for line in str(s.text).splitlines() or [""]:
            self.lines.append(f"\t// {line}")

    def special_reg(self, s: "T.SpecialReg") -> None:
        dst = self.reg(s.dst)
        if s.which is T.SReg.WARPID:
            # The logical warp index within the block (%warpid is the
            # physical slot, which may change during execution).
            self.emit(f"mov.u32 {dst}, %tid.x;")
            self.emit(f"shr.u32 {dst}, {dst}, 5;")
            return
        self.emit(f"mov.u32 {dst}, {_SREG[s.which]};")

    def shared_base(self, s: "T.SharedBase") -> None:
        self.uses_shared = True
        self.emit(f"mov.u32 {self.reg(s.dst)}, {SHARED_SYMBOL};")

    def mov(self, s: "T.Mov") -> None:
        t = s.dst.type
        if t.is_pred:
            if isinstance(s.src, T.Imm):
                self.emit(f"setp.ne.u32 {self.reg(s.dst)}, {1 if s.src.value else 0}, 0;")
            else:
                self.emit(f"mov.pred {self.reg(s.dst)}, {self.reg(s.src)};")
            return
        if isinstance(s.src, T.Reg) and s.src.type.nbits != t.nbits:
            _fail(f"mov between {s.src.type.name} and {t.name} (sizes differ)")
        kind = t.name if t.name in ("f32", "f64") and isinstance(s.src, T.Imm) else f"b{_reg_bits(t)}"
        src = format_imm(T.Imm(s.src.value, t)) if isinstance(s.src, T.Imm) else self.reg(s.src)
        self.emit(f"mov.{kind} {self.reg(s.dst)}, {src};")

    def unary(self, s: "T.Unary") -> None:
        t = s.dst.type
        dst, a = self.reg(s.dst), self.op(s.a)
        if t.is_pred:
            if s.op is not T.UnOp.NOT:
                _fail(f"{s.op.name} on a predicate")
            self.emit(f"not.pred {dst}, {a};")
            return
        if s.op in (T.UnOp.POPC, T.UnOp.CLZ):
            src_t = s.a.type
            if src_t.nbits not in (32, 64):
                _fail(f"{s.op.name} on {src_t.name} (PTX has .b32 and .b64 only)")
            self.emit(f"{_UNARY_INT[s.op]}.b{src_t.nbits} {dst}, {a};")
            return
        if t.name in ("f32", "f64"):
            name = _UNARY_FLOAT.get(s.op)
            if name is None:
                _fail(f"{s.op.name} on {t.name}")
            if t.name == "f64" and ".approx" in name:
                _fail(f"{s.op.name} on f64 has no PTX instruction")
            self.emit(f"{name}.{t.name} {dst}, {a};")
            return
        if t.name in ("f16", "f16x2", "bf16", "bf16x2"):
            name = _UNARY_F16.get(s.op)
            if name is None or (_is_bf16(t) and s.op is T.UnOp.TANH and self.sm < 90):
                _fail(f"{s.op.name} on {t.name}")
            if _is_bf16(t) and s.op in (T.UnOp.NEG, T.UnOp.ABS) and self.sm < 90:
                # sign-bit arithmetic is exact: flip or clear bit 15 of each half
                mask = 0x80008000 if t.nbits == 32 else 0x8000
                word = "b32" if t.nbits == 32 else "b16"
                if s.op is T.UnOp.NEG:
                    self.emit(f"xor.{word} {dst}, {a}, 0x{mask:X};")
                else:
                    self.emit(f"and.{word} {dst}, {a}, 0x{~mask & ((1 << t.nbits) - 1):X};")
                return
            self.emit(f"{name}.{t.name} {dst}, {a};")
            return
        if s.op is T.UnOp.NOT:
            self.emit(f"not.b{_reg_bits(t)} {dst}, {a};")
            self.narrow8(s.dst)
            return
        name = _UNARY_INT.get(s.op)
        if name is None:
            _fail(f"{s.op.name} on {t.name}")
        self.emit(f"{name}.s{_reg_bits(t)} {dst}, {a};")
        self.narrow8(s.dst)

    def binary(self, s: "T.Binary") -> None:
        t, op = s.dst.type, s.op
        if t.is_pred:
            if op not in (T.BinOp.AND, T.BinOp.OR, T.BinOp.XOR):
                _fail(f"{op.name} on predicates")
            self.emit(f"{_BINARY_BITS[op]}.pred {self.reg(s.dst)}, {self.reg_op(s.a)}, {self.reg_op(s.b)};")
            return
        if t.name in ("f32", "f64"):
            name = _BINARY_FLOAT.get(op)
            if name is None:
                _fail(f"{op.name} on {t.name}")
            if t.name == "f64" and name.endswith(".NaN"):
                name = name[:-4]   # no .NaN form for f64; the thread IR should not ask
            self.emit(f"{name}.{t.name} {self.reg(s.dst)}, {self.op(s.a)}, {self.op(s.b)};")
            return
        if t.name in ("f16", "f16x2", "bf16", "bf16x2"):
            self._binary_half(s)
            return
        dst = self.reg(s.dst)
        if op in _BINARY_BITS:
            self.emit(f"{_BINARY_BITS[op]}.b{_reg_bits(t)} {dst}, {self.op(s.a)}, {self.op(s.b)};")
            self.narrow8(s.dst)
            return
        if op is T.BinOp.SHR:
            self.emit(f"shr.{arith_int_type(t)} {dst}, {self.op(s.a)}, {self.op(s.b)};")
            return
        if op is T.BinOp.MUL_WIDE:
            src_t = s.a.type if isinstance(s.a, T.Reg) else s.b.type
            if src_t.nbits * 2 != t.nbits:
                _fail(f"MUL_WIDE from {src_t.name} to {t.name}")
            if src_t.nbits == 8:
                _fail(f"MUL_WIDE from {src_t.name} (PTX has mul.wide from 16 bits up)")
            self.emit(f"mul.wide.{int_type(src_t)} {dst}, {self.op(s.a)}, {self.op(s.b)};")
            return
        name = _BINARY_INT.get(op)
        if name is None:
            _fail(f"{op.name} on {t.name}")
        self.emit(f"{name}.{arith_int_type(t)} {dst}, {self.op(s.a)}, {self.op(s.b)};")
        self.narrow8(s.dst)

    def _binary_half(self, s: "T.Binary") -> None:
        t, op = s.dst.type, s.op
        dst, a, b = self.reg(s.dst), self.op(s.a), self.op(s.b)
        if _is_bf16(t) and self.sm < 90 and op in (T.BinOp.ADD, T.BinOp.SUB, T.BinOp.MUL):
            # sm_80 has fma.rn.bf16x2 but no add/sub/mul: a*1+b, a*(-1)... exact.
            word = "b32" if t.nbits == 32 else "b16"
            one = _BF16X2_ONE if t.nbits == 32 else 0x3F80
            neg_zero = _BF16X2_NEG_ZERO if t.nbits == 32 else 0x8000
            neg_one = _BF16X2_NEG_ONE if t.nbits == 32 else 0xBF80
            const = self.temp(t)
            if op is T.BinOp.MUL:
                self.emit(f"mov.{word} {const}, 0x{neg_zero:X};")
                self.emit(f"fma.rn.{t.name} {dst}, {a}, {b}, {const};")
            elif op is T.BinOp.ADD:
                self.emit(f"mov.{word} {const}, 0x{one:X};")
                self.emit(f"fma.rn.{t.name} {dst}, {a}, {const}, {b};")
            else:   # a - b = b * (-1) + a
                self.emit(f"mov.{word} {const}, 0x{neg_one:X};")
                self.emit(f"fma.rn.{t.name} {dst}, {b}, {const}, {a};")
            return
        name = _BINARY_PACKED.get(op)
        if name is None:
            _fail(f"{op.name} on {t.name}")
        self.emit(f"{name}.{t.name} {dst}, {a}, {b};")

    def fma(self, s: "T.Fma") -> None:
        t = s.dst.type
        if t.is_float:
            self.emit(f"fma.rn.{t.name} {self.reg(s.dst)}, {self.op(s.a)}, {self.op(s.b)}, {self.op(s.c)};")
        else:
            self.emit(f"mad.lo.{arith_int_type(t)} {self.reg(s.dst)}, {self.op(s.a)}, {self.op(s.b)}, "
                      f"{self.op(s.c)};")
            self.narrow8(s.dst)

    def setp(self, s: "T.Setp") -> None:
        t = s.a.type if isinstance(s.a, T.Reg) else s.b.type
        if t.is_pred:
            if s.cmp not in (T.Cmp.EQ, T.Cmp.NE):
                _fail(f"{s.cmp.name} on predicates")
            # p == q is not(p xor q)
            dst = self.reg(s.dst)
            self.emit(f"xor.pred {dst}, {self.reg_op(s.a)}, {self.reg_op(s.b)};")
            if s.cmp is T.Cmp.EQ:
                self.emit(f"not.pred {dst}, {dst};")
            return
        if t.is_float:
            if t.is_packed:
                _fail(f"setp on packed {t.name}")
            cmp = _FLOAT_CMP[s.cmp]
            type_name = t.name
        else:
            cmp = (_SIGNED_CMP if t.is_signed else _UNSIGNED_CMP)[s.cmp]
            type_name = arith_int_type(t)
        a = self.op(T.Imm(s.a.value, t)) if isinstance(s.a, T.Imm) else self.op(s.a)
        b = self.op(T.Imm(s.b.value, t)) if isinstance(s.b, T.Imm) else self.op(s.b)
        self.emit(f"setp.{cmp}.{type_name} {self.reg(s.dst)}, {a}, {b};")

    def selp(self, s: "T.Selp") -> None:
        t = s.dst.type
        dst, pred = self.reg(s.dst), self.reg(s.pred)
        if t.is_pred:
            # d = p ? a : b  ==  (p and a) or (not p and b)
            a, b = self.reg_op(s.a), self.reg_op(s.b)
            tmp = self.temp(t)
            self.emit(f"and.pred {tmp}, {pred}, {a};")
            self.emit(f"not.pred {dst}, {pred};")
            self.emit(f"and.pred {dst}, {dst}, {b};")
            self.emit(f"or.pred {dst}, {dst}, {tmp};")
            return
        kind = t.name if t.name in ("f32", "f64") else f"b{_reg_bits(t)}"
        a = format_imm(T.Imm(s.a.value, t)) if isinstance(s.a, T.Imm) else self.reg(s.a)
        b = format_imm(T.Imm(s.b.value, t)) if isinstance(s.b, T.Imm) else self.reg(s.b)
        self.emit(f"selp.{kind} {dst}, {a}, {b}, {pred};")

    def cvt(self, s: "T.Cvt") -> None:
        dt, st = s.dst.type, s.src.type
        dst = self.reg(s.dst)
        if dt.is_pred:
            # x != 0, unordered for floats: NaN counts as true, as in TL
            if st.is_packed:
                _fail(f"cvt from {st.name} to pred")
            if st.is_float:
                zero = self.op(T.Imm(0.0, st))
                self.emit(f"setp.neu.{st.name} {dst}, {self.reg_op(s.src)}, {zero};")
            else:
                self.emit(f"setp.ne.{arith_int_type(st)} {dst}, {self.reg_op(s.src)}, 0;")
            return
        if st.is_pred:
            kind = dt.name if dt.name in ("f32", "f64") else f"b{_reg_bits(dt)}"
            one = format_imm(T.Imm(1.0 if dt.is_float else 1, dt)) if dt.name in ("f32", "f64") or not dt.is_float \
                else None
            if one is None:
                _fail(f"cvt from pred to {dt.name}")
            zero = format_imm(T.Imm(0.0 if dt.is_float else 0, dt))
            self.emit(f"selp.{kind} {dst}, {one}, {zero}, {self.reg(s.src)};")
            return
        if dt.is_packed or st.is_packed:
            _fail(f"cvt between {st.name} and {dt.name} (use CvtPack or bit operations)")
        src = self.reg_op(s.src)
        # bf16 <-> anything but f32 goes through f32 (exact widening, one rounding).
        if (_is_bf16(st) and dt.name != "f32") or (_is_bf16(dt) and st.name != "f32" and st.name != "bf16"):
            mid = self.temp(T.hw_type("f32"))
            self._cvt_line(mid, T.hw_type("f32"), src, st, None, False)
            src, st = mid, T.hw_type("f32")
        self._cvt_line(dst, dt, src, st, s.rounding, s.saturate)

    def _cvt_line(self, dst: str, dt, src: str, st, rounding, saturate: bool) -> None:
        rnd = _ROUND[rounding] if rounding is not None else ""
        if dt.is_float and st.is_float:
            if dt.nbits > st.nbits:
                rnd = ""                                # widening is exact: PTX forbids a mode
            elif dt.nbits < st.nbits and rnd in ("", ".rni", ".rzi", ".rmi", ".rpi"):
                rnd = rnd or ".rn"                       # narrowing needs a float mode
                if rnd != ".rn" and rnd[-1] == "i":
                    _fail(f"integer rounding {rnd} on a narrowing float conversion")
            elif dt.nbits == st.nbits and dt.name == st.name and rnd in ("", ".rn", ".rz", ".rm", ".rp"):
                if not rnd:
                    self.emit(f"mov.b{dt.nbits} {dst}, {src};")
                    return
                _fail(f"float rounding {rnd} on a same-type conversion (use .rni etc.)")
        elif dt.is_float and not st.is_float:
            if rnd in ("", ".rni", ".rzi", ".rmi", ".rpi"):
                rnd = ".rn"
        elif not dt.is_float and st.is_float:
            if rnd in ("", ".rn", ".rz", ".rm", ".rp"):
                rnd = {"": ".rzi", ".rn": ".rni", ".rz": ".rzi", ".rm": ".rmi", ".rp": ".rpi"}[rnd]
        else:
            rnd = ""                                    # int <-> int
        sat = ".sat" if saturate else ""
        self.emit(f"cvt{rnd}{sat}.{_cvt_type(dt)}.{_cvt_type(st)} {dst}, {src};")

    def cvt_pack(self, s: "T.CvtPack") -> None:
        t = s.dst.type
        if t.name not in ("f16x2", "bf16x2"):
            _fail(f"CvtPack to {t.name}")
        self.emit(f"cvt.rn.{t.name}.f32 {self.reg(s.dst)}, {self.op(s.hi)}, {self.op(s.lo)};")

    def lop3(self, s: "T.Lop3") -> None:
        self.emit(f"lop3.b32 {self.reg(s.dst)}, {self.op(s.a)}, {self.op(s.b)}, {self.op(s.c)}, "
                  f"0x{s.lut & 0xFF:02X};")

    def prmt(self, s: "T.Prmt") -> None:
        self.emit(f"prmt.b32 {self.reg(s.dst)}, {self.op(s.a)}, {self.op(s.b)}, {self.op(s.selector)};")

    def shf(self, s: "T.Shf") -> None:
        self.emit(f"shf.{'l' if s.left else 'r'}.{'clamp' if s.clamp else 'wrap'}.b32 {self.reg(s.dst)}, "
                  f"{self.op(s.lo)}, {self.op(s.hi)}, {self.op(s.shift)};")

    def bfe(self, s: "T.Bfe") -> None:
        t = s.dst.type
        self.emit(f"bfe.{int_type(t)} {self.reg(s.dst)}, {self.op(s.a)}, {self.op(s.pos)}, {self.op(s.length)};")

    # -- memory

    @staticmethod
    def _vec(n: int) -> str:
        if n not in (1, 2, 4):
            _fail(f"a vector of {n} registers (PTX has 1, 2 or 4)")
        return "" if n == 1 else f".v{n}"

    def load(self, s: "T.Load") -> None:
        t = s.dsts[0].type
        if any(d.type != t for d in s.dsts):
            _fail("a vector load into registers of different types")
        if len(s.dsts) * t.nbits > 128:
            _fail(f"a {len(s.dsts) * t.nbits}-bit load")
        regs = [self.reg(d) for d in s.dsts]
        dst = regs[0] if len(regs) == 1 else "{" + ", ".join(regs) + "}"
        self.emit(f"{self.guard(s.pred)}ld.{_SPACE[s.space]}{self._vec(len(regs))}.{self._mem_type(t)} "
                  f"{dst}, {self.address(s.addr, s.offset)};")

    @staticmethod
    def _mem_type(t: T.HWType) -> str:
        if t.is_pred:
            _fail("a load or store of a predicate")
        if t.name == "f32":
            return "f32"
        if t.name == "f64":
            return "f64"
        if t.nbits == 8:   # widened into a 16-bit register: zero- or sign-extending (_reg_bits)
            return "s8" if t.is_signed else "u8"
        return f"b{t.nbits}"

    def store(self, s: "T.Store") -> None:
        t = next((x.type for x in s.srcs if isinstance(x, T.Reg)), s.srcs[0].type)
        if len(s.srcs) * t.nbits > 128:
            _fail(f"a {len(s.srcs) * t.nbits}-bit store")
        srcs = [self.reg_op(x, t) for x in s.srcs]
        src = srcs[0] if len(srcs) == 1 else "{" + ", ".join(srcs) + "}"
        self.emit(f"{self.guard(s.pred)}st.{_SPACE[s.space]}{self._vec(len(srcs))}.{self._mem_type(t)} "
                  f"{self.address(s.addr, s.offset)}, {src};")

    def atomic_add(self, s: "T.AtomicAdd") -> None:
        t = s.dst.type if s.dst is not None else s.value.type
        kind = "f32" if t.name == "f32" else ("f64" if t.name == "f64" else int_type(t))
        if kind not in ("f32", "f64", "u32", "s32", "u64"):
            _fail(f"atomic add on {t.name}")
        value = self.op(T.Imm(s.value.value, t)) if isinstance(s.value, T.Imm) else self.reg(s.value)
        where = self.address(s.addr, s.offset)
        space = _SPACE[s.space]
        if s.dst is None:
            self.emit(f"{self.guard(s.pred)}red.{space}.add.{kind} {where}, {value};")
        else:
            self.emit(f"{self.guard(s.pred)}atom.{space}.add.{kind} {self.reg(s.dst)}, {where}, {value};")

    def cp_async(self, s: "T.CpAsync") -> None:
        if s.size not in (4, 8, 16):
            _fail(f"cp.async of {s.size} bytes")
        cache = "cg" if s.size == 16 else "ca"   # .cg (L2 only) exists for 16 bytes only
        dst = self.address(s.dst_addr, 0)
        src = self.address(s.src_addr, 0)
        tail = ""
        if s.src_size is not None:
            size = format_imm(T.Imm(s.src_size.value, T.hw_type("u32"))) if isinstance(s.src_size, T.Imm) \
                else self.reg(s.src_size)
            tail = f", {size}"
        self.emit(f"{self.guard(s.pred)}cp.async.{cache}.shared.global {dst}, {src}, {s.size}{tail};")

    def cp_async_commit(self, s) -> None:
        self.emit("cp.async.commit_group;")

    def cp_async_wait(self, s: "T.CpAsyncWait") -> None:
        self.emit(f"cp.async.wait_group {int(s.n)};")

    def barrier(self, s) -> None:
        self.emit("bar.sync 0;")

    def shfl(self, s: "T.Shfl") -> None:
        self.emit(f"shfl.sync.{_SHFL[s.mode]}.b32 {self.reg(s.dst)}, {self.op(s.src)}, {self.op(s.lane)}, "
                  f"{int(s.clamp)}, 0x{s.mask & 0xFFFFFFFF:08X};")

    def ldmatrix(self, s: "T.Ldmatrix") -> None:
        n = len(s.dsts)
        if n not in (1, 2, 4):
            _fail(f"ldmatrix into {n} registers")
        regs = "{" + ", ".join(self.reg(d) for d in s.dsts) + "}"
        trans = ".trans" if s.trans else ""
        self.emit(f"ldmatrix.sync.aligned.m8n8.x{n}{trans}.shared.b16 {regs}, {self.address(s.addr, 0)};")

    def mma(self, s: "T.Mma") -> None:
        shape = {T.MmaShape.M16N8K16: ("m16n8k16", 4, 2), T.MmaShape.M16N8K8: ("m16n8k8", 2, 1)}[s.shape]
        name, na, nb = shape
        ab = s.ab_type.name
        if ab not in ("f16", "bf16"):
            _fail(f"mma with {ab} operands")
        if len(s.a) != na or len(s.b) != nb or len(s.d) != 4 or len(s.c) != 4:
            _fail(f"mma.{name} needs {na} A, {nb} B, 4 C and 4 D registers")
        d = ", ".join(self.reg(x) for x in s.d)
        a = ", ".join(self.reg(x) for x in s.a)
        b = ", ".join(self.reg(x) for x in s.b)
        c = ", ".join(self.op(x) for x in s.c)
        self.emit(f"mma.sync.aligned.{name}.row.col.f32.{ab}.{ab}.f32 {{{d}}}, {{{a}}}, {{{b}}}, {{{c}}};")

    # -- control flow

    def _bra(self, label: str, pred=None, negate: bool = False) -> None:
        uniform = pred is None or self.uniform.is_uniform(pred)
        guard = "" if pred is None else f"@{'!' if negate else ''}{self.reg(pred)} "
        self.emit(f"{guard}bra{'.uni' if uniform else ''} {label};")

    def for_(self, s: "T.For") -> None:
        if s.step == 0:
            _fail("a For loop with step 0")
        head, cont, end = self.label("for_head"), self.label("for_next"), self.label("for_end")
        var = self.reg(s.var)
        self.emit(f"mov.b32 {var}, {self.op(s.start)};")
        done = self.temp(T.hw_type("pred"))
        self.emit_label(head)
        if s.unroll == 1:
            self.emit('.pragma "nounroll";')
        cmp = "ge" if s.step > 0 else "le"
        self.emit(f"setp.{cmp}.s32 {done}, {var}, {self.op(s.stop)};")
        uniform = self.uniform.is_uniform(s.var) and self.uniform.is_uniform(s.stop)
        self.emit(f"@{done} bra{'.uni' if uniform else ''} {end};")
        self.loops.append(_LoopLabels(cont, end))
        self.block(s.body)
        self.loops.pop()
        self.emit_label(cont)
        self.emit(f"add.s32 {var}, {var}, {s.step};")
        self.emit(f"bra.uni {head};")
        self.emit_label(end)

    def loop(self, s: "T.Loop") -> None:
        head, end = self.label("loop_head"), self.label("loop_end")
        self.emit_label(head)
        self.loops.append(_LoopLabels(head, end))
        self.block(s.body)
        self.loops.pop()
        self.emit(f"bra.uni {head};")
        self.emit_label(end)

    def break_(self, s: "T.Break") -> None:
        if not self.loops:
            _fail("Break outside a loop")
        self._bra(self.loops[-1].break_label, s.pred)

    def continue_(self, s: "T.Continue") -> None:
        if not self.loops:
            _fail("Continue outside a loop")
        self._bra(self.loops[-1].continue_label, s.pred)

    def if_(self, s: "T.If") -> None:
        if not s.then:   # only an else part: skip it when the predicate holds
            end = self.label("endif")
            self._bra(end, s.pred)
            self.block(s.orelse)
            self.emit_label(end)
            return
        else_label, end = self.label("else"), self.label("endif")
        self._bra(else_label if s.orelse else end, s.pred, negate=True)
        self.block(s.then)
        if s.orelse:
            self._bra(end)
            self.emit_label(else_label)
            self.block(s.orelse)
        self.emit_label(end)

    def return_(self, s) -> None:
        self.emit("ret;")

    # -- the kernel

    def print_kernel(self) -> str:
        k = self.kernel
        self.uniform = UniformityAnalysis(k)
        self.name_registers()
        self.block(k.body)
        body_lines = self.lines
        self.lines = []
        params = []
        loads = []
        seen_params = set()
        for p in k.params:
            pname = "param_" + re.sub(r"[^A-Za-z0-9_]", "_", p.name)
            while pname in seen_params:
                pname += "_"
            seen_params.add(pname)
            if p.type.is_pred:
                _fail(f"parameter {p.name} is a predicate")
            ptype = p.type.name if p.type.name in ("f32", "f64") else int_type(p.type) \
                if not p.type.is_float else f"b{p.type.nbits}"
            params.append(f"\t.param .{ptype} {pname}")
            loads.append(f"\tld.param.{ptype} {self.reg(p)}, [{pname}];")
        decls: dict = {}
        for r, name in self.names.items():
            decls.setdefault(reg_decl_type(r.type), []).append(name)
        head = [
            "//",
            f"// Generated by tvm_lite from thread kernel '{k.name}' ({k.threads} threads, "
            f"{k.shared_bytes} bytes of dynamic shared memory)",
            "//",
            f".version {PTX_VERSION}",
            f".target sm_{self.sm}",
            ".address_size 64",
            "",
        ]
        if self.uses_shared or k.shared_bytes:
            head.append(f".extern .shared .align 16 .b8 {SHARED_SYMBOL}[];")
            head.append("")
        head.append(f".visible .entry {_entry_name(k.name)}(")
        head.append(",\n".join(params))
        head.append(")")
        head.append(f".maxntid {int(k.threads)}, 1, 1")
        if k.min_blocks:
            # With .maxntid, ptxas caps the registers per thread so that this
            # many blocks fit in the SM's register file.
            head.append(f".minnctapersm {int(k.min_blocks)}")
        head.append("{")
        for decl, names in decls.items():
            for i in range(0, len(names), 8):
                head.append(f"\t.reg .{decl} {', '.join(names[i:i + 8])};")
        for decl, count in self.temps.items():
            head.append(f"\t.reg .{decl} %tmp_{decl}_<{count}>;")
        head.append("")
        tail = ["\tret;", "}", ""]
        return "\n".join(head + loads + body_lines + tail)


def _entry_name(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name) or "kernel"
    return clean if not clean[0].isdigit() else "k_" + clean


ENTRY_NAME = _entry_name

# Names PTX gives a meaning of its own (special registers): never used as
# register names, so `%tid` in the output is always the special register.
_RESERVED = {"tid", "ntid", "laneid", "warpid", "nwarpid", "ctaid", "nctaid", "smid", "nsmid", "gridid",
             "clock", "clock64", "lanemask_eq", "lanemask_le", "lanemask_lt", "lanemask_ge", "lanemask_gt",
             "pm0", "pm1", "pm2", "pm3", "envreg0", "globaltimer", "total_smem_size",
             "dynamic_smem_size", "clusterid", "nclusterid", "cluster_ctaid", "cluster_nctaid",
             "cluster_ctarank", "cluster_nctarank", "is_explicit_cluster", "aggr_smem_size"}

_DISPATCH = {
    T.Comment: _Printer.comment,
    T.SpecialReg: _Printer.special_reg,
    T.SharedBase: _Printer.shared_base,
    T.Mov: _Printer.mov,
    T.Unary: _Printer.unary,
    T.Binary: _Printer.binary,
    T.Fma: _Printer.fma,
    T.Setp: _Printer.setp,
    T.Selp: _Printer.selp,
    T.Cvt: _Printer.cvt,
    T.CvtPack: _Printer.cvt_pack,
    T.Lop3: _Printer.lop3,
    T.Prmt: _Printer.prmt,
    T.Shf: _Printer.shf,
    T.Bfe: _Printer.bfe,
    T.Load: _Printer.load,
    T.Store: _Printer.store,
    T.AtomicAdd: _Printer.atomic_add,
    T.CpAsync: _Printer.cp_async,
    T.CpAsyncCommit: _Printer.cp_async_commit,
    T.CpAsyncWait: _Printer.cp_async_wait,
    T.Barrier: _Printer.barrier,
    T.Shfl: _Printer.shfl,
    T.Ldmatrix: _Printer.ldmatrix,
    T.Mma: _Printer.mma,
    T.For: _Printer.for_,
    T.If: _Printer.if_,
    T.Loop: _Printer.loop,
    T.Break: _Printer.break_,
    T.Continue: _Printer.continue_,
    T.Return: _Printer.return_,
}


def emit_ptx(kernel: T.ThreadKernel, sm: int) -> str:
    """The PTX module (one `.entry`, named after the kernel) for sm_`sm`."""
    if sm < 80:
        raise TLCompileError(f"PTX printer: sm_{sm} is not supported (sm_80 or newer)")
    return _Printer(kernel, int(sm)).print_kernel()


__all__ = ["emit_ptx", "format_imm", "reg_decl_type", "UniformityAnalysis", "PTX_VERSION", "SHARED_SYMBOL",
           "ENTRY_NAME"]
