"""Thread IR: what ONE CUDA thread does (SIMT), the contract between the GPU
lowering, the PTX printer and the numpy emulator.

The contract is /work/notes/thread_ir_spec.md (summarised here):

- Types are PTX hardware types (`HWType`): predicates, untyped bits (bN),
  unsigned (uN), signed (sN), floats (f16/bf16/f32/f64) and the packed pairs
  f16x2/bf16x2 (32 bits, two halves; the low half is element 0).
- Values are virtual registers (`Reg`, unique names per kernel, made fresh by
  `RegAllocator`) and immediates (`Imm`).
- Statements are small frozen dataclasses. `dst`/`dsts` are written and every
  other operand is read. Control flow is structured (For/If/Loop with
  Break/Continue, Return); trip counts and conditions may differ between the
  threads of a block.
- Memory: global pointers are u64 byte addresses, shared addresses are u32
  byte addresses (`SharedBase` + offset); vector accesses are naturally aligned.

`walk(body)` yields every statement recursively (pre-order); `format_thread_kernel`
(in thread_printer.py, re-exported here) prints a kernel PTX-style.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Iterator, Union

from ..errors import TLDTypeError


# ----------------------------------------------------------------------- types

@dataclass(frozen=True)
class HWType:
    """A PTX register/instruction type. `name` is the PTX spelling without the
    dot ("u32", "f16x2", "pred")."""
    name: str
    nbits: int

    @property
    def kind(self) -> str:
        """"pred", "b", "u", "s", "f" or "bf" (bf16 and bf16x2)."""
        kind = _KINDS.get(self.name)
        if kind is None:
            kind = "pred" if self.name == "pred" else re.match(r"[a-z]+", self.name).group(0)
        return kind

    @property
    def is_pred(self) -> bool:
        return self.name == "pred"

    @property
    def is_float(self) -> bool:
        """f16, bf16, f32, f64 and the packed f16x2/bf16x2."""
        return self.kind in ("f", "bf")

    @property
    def is_packed(self) -> bool:
        """f16x2 or bf16x2: two 16-bit floats in one 32-bit register."""
        return self.name.endswith("x2")

    @property
    def is_signed(self) -> bool:
        """sN integers (floats are not "signed" in this sense)."""
        return self.kind == "s"

    @property
    def is_int(self) -> bool:
        """bN, uN or sN."""
        return self.kind in ("b", "u", "s")

    @property
    def element(self) -> "HWType":
        """The half type of a packed type (f16 for f16x2); the type itself otherwise."""
        return _BY_NAME[self.name[:-2]] if self.is_packed else self

    @property
    def nbytes(self) -> int:
        return max(1, self.nbits // 8)

    def __hash__(self) -> int:
        # The name determines the type; hashing it alone keeps register lookups
        # (dicts keyed by Reg, in every pass and in the emulator) cheap.
        return hash(self.name)

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__


pred = HWType("pred", 1)
b8, b16, b32, b64 = HWType("b8", 8), HWType("b16", 16), HWType("b32", 32), HWType("b64", 64)
u8, u16, u32, u64 = HWType("u8", 8), HWType("u16", 16), HWType("u32", 32), HWType("u64", 64)
s8, s16, s32, s64 = HWType("s8", 8), HWType("s16", 16), HWType("s32", 32), HWType("s64", 64)
f16, bf16, f32, f64 = HWType("f16", 16), HWType("bf16", 16), HWType("f32", 32), HWType("f64", 64)
f16x2, bf16x2 = HWType("f16x2", 32), HWType("bf16x2", 32)

ALL_TYPES: tuple[HWType, ...] = (pred, b8, b16, b32, b64, u8, u16, u32, u64, s8, s16, s32, s64,
                                 f16, bf16, f32, f64, f16x2, bf16x2)
_BY_NAME = {t.name: t for t in ALL_TYPES}
_KINDS: dict[str, str] = {}
_KINDS.update({t.name: t.kind for t in ALL_TYPES})


def hw_type(name: str) -> HWType:
    """The HWType called `name` ("u32", ".f16x2" also accepted)."""
    t = _BY_NAME.get(name.lstrip("."))
    if t is None:
        raise TLDTypeError(f"unknown hardware type {name!r}; expected one of {', '.join(_BY_NAME)}")
    return t


# ---------------------------------------------------------------------- values

@dataclass(frozen=True)
class Reg:
    """A virtual register; equality and hash by (name, type)."""
    name: str
    type: HWType

    def __hash__(self) -> int:
        # One tuple of two strings (whose hashes Python caches) instead of the
        # generated hash's nested dataclass hashes: Regs key many hot dicts.
        return hash((self.name, self.type.name))

    def __repr__(self) -> str:
        return f"%{self.name}:{self.type.name}"


@dataclass(frozen=True)
class Imm:
    """An immediate. Its meaning is taken in the instruction's type (as the PTX
    printer and the emulator read it): integer types take the value wrapped to
    the width; f32/f64 take a number (an int is its value: Imm(1, f32) is 1.0);
    f16/bf16 take an int as the bit pattern and a float as a value; the packed
    f16x2/bf16x2 take the 32-bit pattern; pred takes truthiness."""
    value: Union[int, float]
    type: HWType

    def __repr__(self) -> str:
        return f"{self.value}:{self.type.name}"


Operand = Union[Reg, Imm]

# A kernel parameter is a register whose name is the PTX parameter name.
Param = Reg


class RegAllocator:
    """Makes fresh, unique register names: `new(hint, type)` -> %hint_N.

    `reserve(name)` marks names (e.g. parameters) as taken. Instances are also
    callable as `namer(hint, type)`, the signature select_dequant expects."""

    def __init__(self, taken=()):
        self._taken: set[str] = set()
        self._counter: dict[str, int] = {}
        for n in taken:
            self.reserve(n.name if isinstance(n, Reg) else n)

    def reserve(self, name: str) -> None:
        self._taken.add(name)

    def new(self, hint: str, type_: HWType) -> Reg:
        base = re.sub(r"[^A-Za-z0-9_]", "_", hint or "r")
        if not base[0].isalpha() and base[0] != "_":
            base = "r" + base
        n = self._counter.get(base, 0)
        while f"{base}_{n}" in self._taken:
            n += 1
        name = f"{base}_{n}"
        self._counter[base] = n + 1
        self._taken.add(name)
        return Reg(name, type_)

    __call__ = new


# ---------------------------------------------------------------------- enums

class SReg(enum.Enum):
    TID_X = "%tid.x"
    NTID_X = "%ntid.x"
    CTAID_X = "%ctaid.x"
    CTAID_Y = "%ctaid.y"
    CTAID_Z = "%ctaid.z"
    LANEID = "%laneid"
    WARPID = "%warpid"


class UnOp(enum.Enum):
    NEG = "neg"
    NOT = "not"
    ABS = "abs"
    RCP = "rcp"
    SQRT = "sqrt"
    EX2 = "ex2"
    LG2 = "lg2"
    SIN = "sin"
    COS = "cos"
    TANH = "tanh"
    POPC = "popc"
    CLZ = "clz"


class BinOp(enum.Enum):
    ADD = "add"
    SUB = "sub"
    MUL = "mul"          # low half for integers
    MUL_HI = "mul.hi"
    MUL_WIDE = "mul.wide"  # dst is twice the width of a/b
    DIV = "div"
    REM = "rem"
    MIN = "min"
    MAX = "max"
    AND = "and"
    OR = "or"
    XOR = "xor"
    SHL = "shl"
    SHR = "shr"          # arithmetic for signed types, logical otherwise


class Cmp(enum.Enum):
    EQ = "eq"
    NE = "ne"            # floats: unordered ("neu"), NaN != NaN is true
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"


class Rounding(enum.Enum):
    RN = "rn"
    RZ = "rz"
    RM = "rm"
    RP = "rp"
    RNI = "rni"
    RZI = "rzi"
    RMI = "rmi"
    RPI = "rpi"


class Space(enum.Enum):
    GLOBAL = "global"
    SHARED = "shared"
    LOCAL = "local"


class ShflMode(enum.Enum):
    IDX = "idx"
    UP = "up"
    DOWN = "down"
    BFLY = "bfly"


class MmaShape(enum.Enum):
    M16N8K16 = "m16n8k16"
    M16N8K8 = "m16n8k8"

    @property
    def mnk(self) -> tuple[int, int, int]:
        return {"m16n8k16": (16, 8, 16), "m16n8k8": (16, 8, 8)}[self.value]

    @property
    def a_regs(self) -> int:
        """b32 registers per thread holding A (two 16-bit elements each)."""
        return 4 if self is MmaShape.M16N8K16 else 2

    @property
    def b_regs(self) -> int:
        return 2 if self is MmaShape.M16N8K16 else 1


# ------------------------------------------------------------------ statements

class Stmt:
    """Base class of thread-IR statements (all are frozen dataclasses)."""
    __slots__ = ()


@dataclass(frozen=True)
class SpecialReg(Stmt):
    dst: Reg
    which: SReg


@dataclass(frozen=True)
class SharedBase(Stmt):
    """dst (u32) = shared-window address of the block's dynamic shared buffer."""
    dst: Reg


@dataclass(frozen=True)
class Mov(Stmt):
    dst: Reg
    src: Operand


@dataclass(frozen=True)
class Unary(Stmt):
    op: UnOp
    dst: Reg
    a: Operand


@dataclass(frozen=True)
class Binary(Stmt):
    """The instruction type is dst.type (for MUL_WIDE: a.type, dst is twice as wide)."""
    op: BinOp
    dst: Reg
    a: Operand
    b: Operand


@dataclass(frozen=True)
class Fma(Stmt):
    """fma.rn for floats (incl. f16x2/bf16x2), mad.lo for integers."""
    dst: Reg
    a: Operand
    b: Operand
    c: Operand


@dataclass(frozen=True)
class Setp(Stmt):
    cmp: Cmp
    dst: Reg
    a: Operand
    b: Operand


@dataclass(frozen=True)
class Selp(Stmt):
    """dst = pred ? a : b."""
    dst: Reg
    a: Operand
    b: Operand
    pred: Reg


@dataclass(frozen=True)
class Cvt(Stmt):
    dst: Reg
    src: Operand
    rounding: Rounding | None = None
    saturate: bool = False


@dataclass(frozen=True)
class CvtPack(Stmt):
    """cvt.rn.f16x2.f32 dst, hi, lo (hi goes to the upper half)."""
    dst: Reg
    hi: Operand
    lo: Operand


@dataclass(frozen=True)
class Lop3(Stmt):
    dst: Reg
    a: Operand
    b: Operand
    c: Operand
    lut: int


@dataclass(frozen=True)
class Prmt(Stmt):
    """prmt.b32 (default mode)."""
    dst: Reg
    a: Operand
    b: Operand
    selector: Operand


@dataclass(frozen=True)
class Shf(Stmt):
    """shf.{l,r}.{clamp,wrap}.b32 dst, lo, hi, shift (funnel shift of hi:lo)."""
    dst: Reg
    lo: Operand
    hi: Operand
    shift: Operand
    left: bool
    clamp: bool


@dataclass(frozen=True)
class Bfe(Stmt):
    """bfe.{u32,s32,u64,s64} (type = dst.type)."""
    dst: Reg
    a: Operand
    pos: Operand
    length: Operand


@dataclass(frozen=True)
class Load(Stmt):
    """ld[.v2|.v4].space: 1, 2 or 4 registers of one type, width <= 128 bits.
    When `pred` is false the dsts keep their values."""
    dsts: tuple[Reg, ...]
    space: Space
    addr: Operand
    offset: int = 0
    pred: Reg | None = None


@dataclass(frozen=True)
class Store(Stmt):
    space: Space
    addr: Operand
    offset: int
    srcs: tuple[Operand, ...]
    pred: Reg | None = None


@dataclass(frozen=True)
class AtomicAdd(Stmt):
    """red.add (dst None) or atom.add (dst = old value); f32, u32, s32 (value.type/dst.type)."""
    space: Space
    addr: Operand
    offset: int
    value: Operand
    dst: Reg | None = None
    pred: Reg | None = None


@dataclass(frozen=True)
class CpAsync(Stmt):
    """cp.async dst(shared u32), src(global u64), size in {4, 8, 16}; src_size < size zero-fills."""
    dst_addr: Operand
    src_addr: Operand
    size: int
    src_size: Operand | None = None
    pred: Reg | None = None


@dataclass(frozen=True)
class CpAsyncCommit(Stmt):
    pass


@dataclass(frozen=True)
class CpAsyncWait(Stmt):
    """cp.async.wait_group n: all but the newest n committed groups have landed."""
    n: int


@dataclass(frozen=True)
class Barrier(Stmt):
    """bar.sync 0."""


@dataclass(frozen=True)
class Shfl(Stmt):
    mode: ShflMode
    dst: Reg
    src: Operand
    lane: Operand
    clamp: int
    mask: int = 0xFFFFFFFF


@dataclass(frozen=True)
class Ldmatrix(Stmt):
    """ldmatrix.sync.aligned.m8n8.{x1,x2,x4}[.trans].shared.b16."""
    dsts: tuple[Reg, ...]
    addr: Operand
    trans: bool = False


@dataclass(frozen=True)
class Mma(Stmt):
    """mma.sync.aligned.<shape>.row.col.f32.<ab>.<ab>.f32 d, a, b, c."""
    shape: MmaShape
    ab_type: HWType
    d: tuple[Reg, ...]
    a: tuple[Reg, ...]
    b: tuple[Reg, ...]
    c: tuple[Operand, ...]


@dataclass(frozen=True)
class Comment(Stmt):
    text: str


@dataclass(frozen=True)
class For(Stmt):
    """for (var = start; var < stop; var += step) body  (step > 0; bounds may be per-thread)."""
    var: Reg
    start: Operand
    stop: Operand
    step: int
    body: tuple[Stmt, ...]
    unroll: int | None = None


@dataclass(frozen=True)
class If(Stmt):
    pred: Reg
    then: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...] = ()


@dataclass(frozen=True)
class Loop(Stmt):
    """Loop forever; leave with Break (or Return)."""
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class Break(Stmt):
    pred: Reg | None = None


@dataclass(frozen=True)
class Continue(Stmt):
    pred: Reg | None = None


@dataclass(frozen=True)
class Return(Stmt):
    pass


# ---------------------------------------------------------------------- kernel

@dataclass(frozen=True)
class ThreadKernel:
    """One CUDA kernel: `params` are registers named like the PTX parameters;
    `threads` per block; `shared_bytes` of dynamic shared memory; `meta` is a
    free-form tuple of (key, value) pairs (or a frozen mapping); `min_blocks`
    (0: none) blocks per SM that must fit (vm.Kernel.min_blocks)."""
    name: str
    params: tuple[Reg, ...]
    threads: int
    shared_bytes: int
    body: tuple[Stmt, ...]
    meta: tuple = ()
    min_blocks: int = 0

    def meta_get(self, key, default=None):
        items = self.meta.items() if hasattr(self.meta, "items") else self.meta
        for k, v in items:
            if k == key:
                return v
        return default


# ------------------------------------------------------------------- visitors

def children(s: Stmt) -> tuple[tuple[Stmt, ...], ...]:
    """The nested statement blocks of `s` (then/orelse of If, body of For/Loop)."""
    if isinstance(s, If):
        return (tuple(s.then), tuple(s.orelse))
    if isinstance(s, (For, Loop)):
        return (tuple(s.body),)
    return ()


def walk(body) -> Iterator[Stmt]:
    """Every statement of `body` (a tuple of statements or a ThreadKernel), recursively, pre-order."""
    if isinstance(body, ThreadKernel):
        body = body.body
    for s in body:
        yield s
        for block in children(s):
            yield from walk(block)


_BLOCK_FIELDS = ("body", "then", "orelse")


def operands(s: Stmt) -> Iterator[Operand]:
    """Every Reg/Imm a statement mentions directly (written or read), not those of nested blocks."""
    for name in s.__dataclass_fields__:
        if name in _BLOCK_FIELDS:
            continue
        v = getattr(s, name)
        if isinstance(v, (Reg, Imm)):
            yield v
        elif isinstance(v, tuple):
            for x in v:
                if isinstance(x, (Reg, Imm)):
                    yield x


def written(s: Stmt) -> tuple[Reg, ...]:
    """Registers a statement writes (For writes its loop variable)."""
    if isinstance(s, For):
        return (s.var,)
    if isinstance(s, Mma):
        return tuple(s.d)
    out = []
    for name in ("dst", "dsts"):
        v = getattr(s, name, None)
        if isinstance(v, Reg):
            out.append(v)
        elif isinstance(v, tuple):
            out.extend(v)
    return tuple(out)


def all_regs(kernel: ThreadKernel) -> list[Reg]:
    """Every register the kernel mentions, params first, then in first-mention order."""
    seen: dict[Reg, None] = dict.fromkeys(kernel.params)
    for s in walk(kernel.body):
        for x in operands(s):
            if isinstance(x, Reg):
                seen.setdefault(x, None)
    return list(seen)


def format_thread_kernel(kernel: ThreadKernel) -> str:
    """Readable PTX-flavoured text of `kernel` (see thread_printer.py)."""
    from .thread_printer import format_thread_kernel as fmt
    return fmt(kernel)
